"""The grading runner behind ``python -m conformance grade`` and ``dl-ch2 grade``.

A grade always ends, and always ends with a report whose totals equal the specs collected:

- the adapter is loaded first in a worker process: the grading process's own worker (one
  worker start per grade: a notebook's cells run once), or, under ``-n > 1``, a probe's
  (``probe_metadata``: xdist's controller runs no spec). A bad adapter is a usage error
  (exit 2) naming the attribute, printed here in one line, before any spec runs;
- the specs run in a pytest process of the grader's (this supervisor's child), which never
  imports the submission: the adapter runs in a worker process that serves its verbs over a
  pipe, as an unprivileged user in namespaces of its own when the grader is root
  (``conformance.grading.sandbox``). A verb that ends its process, a late reply (the
  per-spec timeout, enforced from outside the worker) or a reply that breaks the protocol
  fails that spec; the next one gets a fresh worker, up to ``--max-worker-restart`` losses;
- the whole grade has a budget; the pytest process runs in its own process group under
  this supervisor: past the budget plus a grace period it is killed, and the last report
  snapshot it wrote is the report.

Exit codes: 0 complete and every claimed spec passed; 1 complete with failures; 2 usage error
(bad path, bad metadata, bad options); 3 incomplete (interrupted, out of budget, out of
worker restarts; the report lists the specs not run and counts them as not passed).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from conformance.adapter import AdapterLoadError
from conformance.grading.client import AdapterMeta, plan, probe
from conformance.grading.limits import (
    DEFAULT_BUDGET,
    DEFAULT_MAX_WORKER_RESTART,
    DEFAULT_MEMORY_LIMIT_GIB,
    DEFAULT_SLOW_SPEC_TIMEOUT,
    DEFAULT_SPEC_TIMEOUT,
)
from conformance.grading.sandbox import Limits, release_uids
from conformance.report import SNAPSHOT_REASON, empty_report, report_markdown

__all__ = [
    "DEFAULT_BUDGET",
    "DEFAULT_MAX_WORKER_RESTART",
    "DEFAULT_MEMORY_LIMIT_GIB",
    "DEFAULT_SLOW_SPEC_TIMEOUT",
    "DEFAULT_SPEC_TIMEOUT",
    "EXIT_COMPLETE_FAILED",
    "EXIT_COMPLETE_PASSED",
    "EXIT_INCOMPLETE",
    "EXIT_USAGE",
    "AdapterMeta",
    "exit_code",
    "grade",
    "probe_metadata",
]

EXIT_COMPLETE_PASSED = 0
EXIT_COMPLETE_FAILED = 1
EXIT_USAGE = 2
EXIT_INCOMPLETE = 3

#: Seconds the supervisor waits past the budget before it interrupts, then kills, pytest.
GRACE = 20.0
PROBE_TIMEOUT = 120.0
#: Seconds kept from the budget for pytest's wind-down (the report card, the exit).
WIND_DOWN = 1.0
_PROBE_MARK = "DL_CH2_ADAPTER_METADATA "


def absolute_spec(spec: str) -> str:
    """``spec`` with a file adapter's path made absolute (workers run in a scratch folder)."""
    target, sep, attr = spec.partition(":")
    if target.endswith((".py", ".ipynb")):
        return str(Path(target).resolve()) + sep + attr
    return spec


def probe_metadata(
    spec: str,
    timeout: float = PROBE_TIMEOUT,
    *,
    packages: Sequence[str] = ("numpy",),
    folder: Path | None = None,
) -> AdapterMeta:
    """Load and validate the adapter in a worker process; return its metadata.

    Raises AdapterLoadError (naming the bad attribute) if the adapter cannot be loaded, its
    metadata is invalid, or loading it ends the process or takes longer than ``timeout``.
    """
    target, iso, paths = plan(
        spec, packages=list(packages), hide=[], limits=Limits(), cwd=os.getcwd(),
        folder=str(folder) if folder else None,
    )  # fmt: skip
    grade_dir = Path(tempfile.mkdtemp(prefix="dl-ch2-probe-"))
    os.chmod(grade_dir, 0o711)
    try:
        return probe(target, iso, grade_dir, timeout=timeout, folder=folder, paths=paths)
    finally:
        import shutil

        shutil.rmtree(grade_dir, ignore_errors=True)
        release_uids()  # the grade's own process takes it next


def exit_code(report: dict[str, Any]) -> int:
    """0 complete and all passed, 1 complete with failures, 3 incomplete (see module doc)."""
    if not report.get("complete", False):
        return EXIT_INCOMPLETE
    return EXIT_COMPLETE_FAILED if report["totals"]["failed"] else EXIT_COMPLETE_PASSED


def _missing_plugins(jobs: int) -> list[str]:
    import importlib.util

    wanted = ("xdist",) if jobs > 1 else ()
    return [m for m in wanted if importlib.util.find_spec(m) is None]


def _usage(message: str) -> int:
    print(f"conformance grade: error: {message}", file=sys.stderr)
    return EXIT_USAGE


def _kill_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if hasattr(os, "killpg"):
            os.killpg(pid, sig)
        elif sig != signal.SIGINT:
            os.kill(pid, sig)


def _bad_option(budget: float, spec_timeout: float | None, jobs: int | None,
                max_worker_restart: int | None, dtype: str | None,
                extra: Sequence[str]) -> str | None:  # fmt: skip
    """What is wrong with the grade's options, in one line; None if nothing."""
    for name, value in (("--budget", budget), ("--spec-timeout", spec_timeout)):
        if value is not None and not value > 0:
            return f"{name} must be a positive number of seconds, got {value}"
    if jobs is not None and jobs < 1:
        return f"-n/--jobs must be at least 1 (grading always uses worker processes), got {jobs}"
    if max_worker_restart is not None and max_worker_restart < 0:
        return f"--max-worker-restart must be >= 0, got {max_worker_restart}"
    if dtype is not None and dtype not in ("float32", "float64"):
        return f"--dtype must be float32 or float64, got {dtype!r}"
    for arg in extra:
        if arg in ("-n", "--numprocesses", "no:xdist", "no:timeout") or arg.startswith(
            ("-n", "--numprocesses=", "--dist", "-p no:")
        ):
            return f"pytest option {arg!r} would undo the grade's isolation; use grade's own -n"
    missing = _missing_plugins(jobs or 1)
    if missing:
        return f"grading needs {', '.join(missing)}: pip install 'dl-ch2[conformance]'"
    return None


def _pytest_command(adapter: str, tmp: str, budget: float, deadline: float,
                    opts: dict[str, Any]) -> list[str]:  # fmt: skip
    """The grading process's command line (``opts``: grade's keyword options)."""
    here = Path(__file__).resolve().parents[1]  # the suite
    restarts = opts["max_worker_restart"]
    args = [sys.executable, "-m", "pytest", str(here / "specs"), "--rootdir", str(here),
            "-p", "no:cacheprovider", "--impl", absolute_spec(adapter),
            "--adapter-metadata", str(Path(tmp) / "adapter-metadata.json"), "--grade-dir", tmp,
            "--max-restarts", str(DEFAULT_MAX_WORKER_RESTART if restarts is None else restarts),
            "--budget", f"{budget:g}", "--deadline", f"{deadline:.3f}",
            "--report-json", str(Path(tmp) / "report.json"),
            "--usage-error-file", str(Path(tmp) / "usage-error.txt"),
            "--worker-packages", ",".join(opts["packages"])]  # fmt: skip
    if (opts["jobs"] or 1) > 1:
        args += ["-n", str(opts["jobs"])]
    for path in opts["hide"]:  # absolute: pytest runs in the grade's own folder
        args += ["--hide", str(Path(path).resolve())]
    if opts["folder"]:
        args += ["--submission-folder", str(Path(opts["folder"]).resolve())]
    if opts["spec_timeout"] is not None:
        args += ["--spec-timeout", str(opts["spec_timeout"])]
    if opts["memory_limit_gib"] is not None:
        args += ["--memory-limit", str(opts["memory_limit_gib"])]
    if opts["dtype"]:
        args += ["--dtype", opts["dtype"]]
    return args


def _supervise(proc: subprocess.Popen[bytes], remaining: float) -> tuple[int, str | None, bool]:
    """Wait for the grading process: (its exit code, why it was stopped, interrupted?).

    Past its budget plus GRACE it is interrupted, GRACE later killed; a first Ctrl-C is
    passed on to it, a second kills it."""
    killed = None
    deadline = time.monotonic() + remaining + GRACE
    interrupted = False
    while True:
        try:
            return proc.wait(timeout=max(0.1, deadline - time.monotonic())), killed, interrupted
        except subprocess.TimeoutExpired:
            if killed is None:
                # the pytest process should have stopped itself at its budget
                killed = "the grading process outlived its budget and was interrupted"
                os.kill(proc.pid, signal.SIGINT)
                deadline = time.monotonic() + GRACE
            else:
                killed = "the grading process outlived its budget and was killed"
                _kill_group(proc.pid, signal.SIGKILL)
                return proc.wait(), killed, interrupted
        except KeyboardInterrupt:
            if interrupted:  # a second Ctrl-C: stop now
                killed = "interrupted twice (Ctrl-C); the grading process was killed"
                _kill_group(proc.pid, signal.SIGKILL)
                return proc.wait(), killed, interrupted
            interrupted = True
            os.kill(proc.pid, signal.SIGINT)
            deadline = time.monotonic() + GRACE


def grade(
    adapter: str,
    dtype: str | None = None,
    report_json: str | None = None,
    report_md: str | None = None,
    jobs: int | None = None,
    extra: Sequence[str] = (),
    *,
    spec_timeout: float | None = None,
    budget: float | None = None,
    max_worker_restart: int | None = None,
    memory_limit_gib: float | None = None,
    packages: Sequence[str] = ("numpy",),
    hide: Sequence[str] = (),
    folder: str | None = None,
) -> int:
    """Grade ``adapter``; print the report card; return the exit code (module doc). A SIGTERM
    is handled as Ctrl-C (the grade stops, incomplete, with its report). ``packages``: what a
    worker may import; ``hide``: more paths it must not see; ``folder``: a folder submission."""
    if hasattr(signal, "SIGTERM") and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, signal.default_int_handler)
    t0, wall0 = time.monotonic(), time.time()
    budget = DEFAULT_BUDGET if budget is None else budget
    bad = _bad_option(budget, spec_timeout, jobs, max_worker_restart, dtype, extra)
    if bad is not None:
        return _usage(bad)
    meta: AdapterMeta | None = None
    if (jobs or 1) > 1:  # xdist's controller runs no spec: it takes the metadata from a probe
        probed = _probe(adapter, dtype, min(PROBE_TIMEOUT, budget), packages, folder)
        if not isinstance(probed, AdapterMeta):
            return probed if isinstance(probed, int) else _publish(
                probed, report_json, report_md, printed=False)  # fmt: skip
        meta = probed
    outputs = [str(Path(p).resolve().parent) for p in (report_json, report_md) if p]
    opts = {"max_worker_restart": max_worker_restart, "packages": packages, "jobs": jobs,
            "hide": [*hide, *outputs], "folder": folder, "spec_timeout": spec_timeout,
            "memory_limit_gib": memory_limit_gib, "dtype": dtype}  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="dl-ch2-grade-", ignore_cleanup_errors=True) as tmp:
        os.chmod(tmp, 0o711)  # the worker reaches its own scratch folder in it, nothing else
        if meta is not None:
            (Path(tmp) / "adapter-metadata.json").write_text(meta.to_json())
        remaining = max(1.0, budget - (time.monotonic() - t0))
        # pytest's start-up counts against the budget; WIND_DOWN is kept for its exit
        args = _pytest_command(adapter, tmp, budget, wall0 + budget - WIND_DOWN, opts)
        outcome = _run_pytest([*args, *extra], Path(tmp), remaining, adapter, dtype)
    if isinstance(outcome, int):
        return outcome
    return _publish(outcome[0], report_json, report_md, printed=outcome[1])


def _probe(adapter: str, dtype: str | None, timeout: float, packages: Sequence[str],
           folder: str | None) -> AdapterMeta | int | dict[str, Any]:  # fmt: skip
    """The adapter's metadata from a worker of its own (a multi-process grade's), or a usage
    exit code, or the report of a grade interrupted before it started."""
    try:
        meta = probe_metadata(adapter, timeout=timeout, packages=packages,
                              folder=Path(folder) if folder else None)  # fmt: skip
    except AdapterLoadError as exc:
        return _usage(str(exc))
    except KeyboardInterrupt:
        return _interrupted_before_start(adapter, dtype)
    if dtype is not None and dtype not in meta.dtypes:
        return _usage(f"--dtype {dtype}: the adapter {meta.name} declares {meta.dtypes} only")
    return meta


def _run_pytest(
    args: list[str], tmp: Path, remaining: float, adapter: str, dtype: str | None
) -> int | tuple[dict[str, Any], bool]:
    """Run the grading process in ``tmp``: a usage exit code, or (its report, printed?).

    Its one worker loads the adapter: a bad one is a usage error, printed here in one line."""
    proc = subprocess.Popen(args, start_new_session=True, env=_grader_env(), cwd=tmp)
    rc, killed, interrupted = _supervise(proc, remaining)
    _kill_group(proc.pid, signal.SIGKILL)  # stray workers, if any
    if rc == int(pytest_usage_error()):  # pytest printed the error (bad -k, option, ...)
        usage = tmp / "usage-error.txt"
        text = usage.read_text(encoding="utf-8", errors="surrogateescape") if usage.exists() else ""
        return _usage(text) if text else EXIT_USAGE
    meta_file = tmp / "adapter-metadata.json"
    meta = AdapterMeta.from_json(meta_file.read_text()) if meta_file.exists() else None
    report, printed = _final_report(tmp / "report.json", meta, adapter, dtype, killed, interrupted)
    if rc == 5 and report.get("totals", {}).get("collected") == 0:
        return _usage("no spec selected (check the -k/-m options given to pytest)")
    return report, printed


def _grader_env() -> dict[str, str]:
    """The grading process's environment: it imports only the suite, never a module of the
    folder it was started in; the grade's secret seed is fresh (no worker sees it)."""
    here = Path(__file__).resolve().parents[1]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in [str(here.parent), env.get("PYTHONPATH")] if p)
    env["DL_CH2_ORIGIN_CWD"] = os.getcwd()
    env["DL_CH2_GRADE_SECRET"] = secrets.token_hex(16)  # fresh inputs no worker sees
    return env


def pytest_usage_error() -> int:
    import pytest

    return int(pytest.ExitCode.USAGE_ERROR)


def _interrupted_before_start(adapter: str, dtype: str | None) -> dict[str, Any]:
    report = empty_report(None, adapter, dtype or "float64", "cpu")
    report["incomplete_reason"] = "interrupted (Ctrl-C) before any spec was collected"
    return report


def _final_report(
    path: Path,
    meta: AdapterMeta | None,
    adapter: str,
    dtype: str | None,
    killed: str | None,
    interrupted: bool,
) -> tuple[dict[str, Any], bool]:
    """The report pytest left (final, or its last snapshot), and whether it printed the card."""
    report: dict[str, Any] | None = None
    if path.exists():
        try:
            report = json.loads(path.read_text())
        except (OSError, ValueError):
            report = None
    if report is None:
        first_dtype, device = (meta.dtypes[0], meta.devices[0]) if meta else ("float64", "cpu")
        report = empty_report(meta, adapter, dtype or first_dtype, device)
    printed = (
        report.get("incomplete_reason") != SNAPSHOT_REASON and report.get("complete") is not None
    )
    if report.get("incomplete_reason") == SNAPSHOT_REASON or report.get("complete") is None:
        if killed:
            reason = killed
        elif interrupted:
            reason = "interrupted (Ctrl-C)"
        else:
            reason = "the grading process ended without a final report"
        report["complete"] = False
        report["incomplete_reason"] = reason
    return report, printed


def _publish(
    report: dict[str, Any], report_json: str | None, report_md: str | None, *, printed: bool
) -> int:
    from conformance.atomic import atomic_write

    md = report_markdown(report)
    if not printed:
        print("=" * 30 + " dl-ch2 conformance report card " + "=" * 30)
        print(md)
    if report_json:
        atomic_write(report_json, json.dumps(report, indent=1) + "\n")
    if report_md:
        atomic_write(report_md, md)
    code = exit_code(report)
    t = report.get("totals", {})
    verdict = {
        EXIT_COMPLETE_PASSED: "complete, every claimed spec passed",
        EXIT_COMPLETE_FAILED: "complete, with failures",
        EXIT_INCOMPLETE: f"INCOMPLETE: {report.get('incomplete_reason')}",
    }[code]
    print(
        f"conformance grade: {verdict}; {t.get('passed', 0)} passed, {t.get('failed', 0)} "
        f"failed, {t.get('not_run', 0)} not run of {t.get('collected', 0)} collected "
        f"(exit {code})",
        file=sys.stderr,
    )
    return code


def main(argv: Sequence[str] | None = None) -> int:
    print("usage: python -m conformance grade ADAPTER", file=sys.stderr)
    return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
