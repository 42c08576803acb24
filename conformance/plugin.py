"""The pytest plugin behind ``pytest conformance --impl ...``.

Options: ``--impl`` (or ``$DL_CH2_IMPL``), ``--dtype``, ``--report-json``, ``--report-md``,
``--expectations``, ``--spec-timeout``, ``--slow-spec-timeout``, ``--budget``,
``--memory-limit``. It loads the adapter, skips specs needing unclaimed capabilities as
"not claimed", applies expectation files, and prints a report card per chapter section.

The process plays one of three roles. Under pytest-xdist (``-n N``, what ``python -m
conformance grade`` always uses) the *controller* never imports the implementation: it reads
the adapter's metadata from a spawned probe (``conformance.runner.probe_metadata``), learns the
collected spec ids from the workers, turns worker crashes into failed specs, enforces the
budget and writes the report; each *worker* (a fresh interpreter, spawned by execnet) caps its
memory, moves to a scratch directory of its own, loads the adapter and runs specs. Without
``-n`` everything runs *in-process*, without isolation.
"""

from __future__ import annotations

import contextlib
import fnmatch
import functools
import json
import math
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conformance import __version__ as SUITE_VERSION
from conformance.adapter import CAPABILITIES, KNOWN_DTYPES, AdapterLoadError, load_adapter
from conformance.atomic import atomic_write
from conformance.harness import Impl
from conformance.runner import (
    DEFAULT_MEMORY_LIMIT_GIB,
    DEFAULT_SLOW_SPEC_TIMEOUT,
    DEFAULT_SPEC_TIMEOUT,
    AdapterMeta,
    absolute_spec,
    probe_metadata,
)

REPORT_SCHEMA = "dl-ch2-conformance-report/2"
NOT_CLAIMED = "not claimed"
#: incomplete_reason of the snapshots written while a grade runs (replaced at its end).
SNAPSHOT_REASON = "the grade did not finish (snapshot written while it ran)"
#: Verbs that convert arrays rather than compute: not "the verb a spec exercises".
_CONVERSIONS = ("asarray", "to_numpy")

SECTIONS = {
    "2.1": "§2.1 A first look at a neural network",
    "2.2": "§2.2 Data representations",
    "2.3": "§2.3 Tensor operations",
    "2.4": "§2.4 Gradient-based optimization",
    "2.5": "§2.5 The first example, from scratch",
}
EXPECTATIONS_DIR = Path(__file__).parent / "expectations"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("dl-ch2 conformance")
    group.addoption(
        "--impl",
        default=None,
        help="implementation to grade: numpy, torch-cpu, torch-cuda, a module[:attr] "
        "or path/to/adapter.py (default: $DL_CH2_IMPL, else numpy)",
    )
    group.addoption(
        "--dtype", default=None, help="float32 or float64 (default: the adapter's first)"
    )
    group.addoption("--report-json", default=None, help="write the report card as JSON here")
    group.addoption("--report-md", default=None, help="write the Markdown summary here")
    group.addoption(
        "--expectations",
        default=None,
        help="skips/xfails file of test-id patterns (default: the adapter's own)",
    )
    group.addoption(
        "--spec-timeout",
        type=float,
        default=DEFAULT_SPEC_TIMEOUT,
        help=f"seconds per spec (pytest-timeout, thread method; default {DEFAULT_SPEC_TIMEOUT:g})",
    )
    group.addoption(
        "--slow-spec-timeout",
        type=float,
        default=DEFAULT_SLOW_SPEC_TIMEOUT,
        help=f"seconds per spec marked slow (default {DEFAULT_SLOW_SPEC_TIMEOUT:g})",
    )
    group.addoption(
        "--budget",
        type=float,
        default=None,
        help="seconds for the whole run; past it the run stops and is reported incomplete",
    )
    group.addoption(
        "--memory-limit",
        type=float,
        default=DEFAULT_MEMORY_LIMIT_GIB,
        help="GiB of data memory (RLIMIT_DATA) per xdist worker; 0: no cap "
        f"(default {DEFAULT_MEMORY_LIMIT_GIB:g})",
    )
    group.addoption("--adapter-metadata", default=None, help=argparse_suppress())
    group.addoption("--grade-dir", default=None, help=argparse_suppress())
    # the supervisor's wall-clock deadline (epoch seconds): its budget includes our start-up
    group.addoption("--deadline", type=float, default=None, help=argparse_suppress())


def argparse_suppress() -> str:
    import argparse

    return argparse.SUPPRESS


@dataclass
class State:
    spec: str
    role: str = "in-process"  # or "controller", "worker"
    adapter: Any = None
    meta: AdapterMeta | None = None
    load_error: str | None = None
    dtype: str = "float64"
    device: str = "cpu"
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    unmatched: list[str] = field(default_factory=list)
    collected: list[str] = field(default_factory=list)
    spec_info: dict[str, dict[str, Any]] = field(default_factory=dict)
    started: dict[str, float] = field(default_factory=dict)
    crashes: int = 0
    last_node_error: str | None = None
    max_restarts: int | None = None
    collect_errors: list[str] = field(default_factory=list)
    stop_reason: str | None = None
    interrupt: str | None = None
    exitstatus: int | None = None
    grade_dir: Path | None = None
    own_grade_dir: bool = False
    budget: float | None = None
    t0: float = field(default_factory=time.monotonic)
    timer: threading.Timer | None = None
    last_snapshot: float = 0.0
    origin_cwd: Path = field(default_factory=Path.cwd)  # relative paths given are from here
    isolation: dict[str, Any] = field(default_factory=dict)


_STATE_KEY = pytest.StashKey[State]()


def _git_sha() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            cwd=Path(__file__).parent,
            timeout=5,
        )
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


@functools.lru_cache(maxsize=1)
def suite_version() -> str:
    sha = _git_sha()
    return f"{SUITE_VERSION}+g{sha}" if sha else SUITE_VERSION


def _role(config: pytest.Config) -> str:
    if hasattr(config, "workerinput"):
        return "worker"
    if config.getoption("dist", "no") != "no" and config.getoption("numprocesses", None):
        return "controller"
    return "in-process"


def _cap_memory(gib: float) -> str:
    """RLIMIT_DATA (not RLIMIT_AS, whose cap on address space breaks CUDA's start-up)."""
    if gib <= 0:
        return "none"
    try:
        import resource
    except ImportError:  # not on this platform
        return "none (no resource module)"
    want = int(gib * 2**30)
    _soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
    if hard != resource.RLIM_INFINITY:
        want = min(want, hard)
    resource.setrlimit(resource.RLIMIT_DATA, (want, hard))
    return f"RLIMIT_DATA {want} bytes"


def _enter_scratch(config: pytest.Config, state: State) -> None:
    """Worker side: cap memory, then run from a scratch directory of this worker's own."""
    winput = config.workerinput  # type: ignore[attr-defined]
    state.origin_cwd = Path.cwd()
    state.isolation["memory_limit"] = _cap_memory(float(config.getoption("--memory-limit")))
    grade_dir = winput.get("dl_ch2_grade_dir")
    if grade_dir:
        scratch = Path(grade_dir) / f"scratch-{winput.get('workerid', 'gw')}"
        scratch.mkdir(parents=True, exist_ok=True)
        # relative entries of sys.path (the cwd of `python -m`) keep meaning the old cwd
        sys.path[:] = [os.path.abspath(p) if p else os.getcwd() for p in sys.path]
        os.chdir(scratch)
        state.grade_dir = Path(grade_dir)
        # so the controller can stop a worker stuck in a spec when the budget runs out
        atomic_write(Path(grade_dir) / f"pid-{os.getpid()}", str(os.getppid()))


def pytest_configure(config: pytest.Config) -> None:
    for line in (
        "section(id): the chapter section a spec belongs to, e.g. section('2.3')",
        "requires(capability): the spec needs an optional adapter capability",
        "erratum: the spec pins the correct behaviour where a source is wrong",
        "mnist: needs the real MNIST files (skips with a reason without them)",
        "slow: takes more than a few seconds",
    ):
        config.addinivalue_line("markers", line)
    spec = config.getoption("--impl", None) or os.environ.get("DL_CH2_IMPL") or "numpy"
    state = State(spec=spec, role=_role(config))
    config.stash[_STATE_KEY] = state
    for opt in ("--spec-timeout", "--slow-spec-timeout"):
        value = config.getoption(opt)
        if not value > 0:
            raise pytest.UsageError(f"{opt} must be a positive number of seconds, got {value}")
    budget = config.getoption("--budget", None)
    if budget is not None and not budget > 0:
        raise pytest.UsageError(f"--budget must be a positive number of seconds, got {budget}")
    state.budget = budget
    load_spec = absolute_spec(spec)
    try:
        if state.role == "controller":
            meta_file = config.getoption("--adapter-metadata", None)
            if meta_file:
                state.meta = AdapterMeta.from_json(Path(meta_file).read_text())
            else:
                state.meta = probe_metadata(load_spec)
        else:
            if state.role == "worker":
                _enter_scratch(config, state)
            state.adapter = load_adapter(load_spec)
            state.meta = AdapterMeta.of(state.adapter)
    except AdapterLoadError as exc:
        raise pytest.UsageError(f"--impl {spec}: {exc}") from exc
    meta = state.meta
    dtype = config.getoption("--dtype", None)
    if dtype is not None and dtype not in KNOWN_DTYPES:
        raise pytest.UsageError(f"--dtype must be one of {KNOWN_DTYPES}, got {dtype!r}")
    if dtype is not None and dtype not in meta.dtypes:
        raise pytest.UsageError(
            f"--dtype {dtype}: the adapter {meta.name} declares dtypes {meta.dtypes} only"
        )
    state.dtype = dtype or meta.dtypes[0]
    state.device = meta.devices[0]
    if state.role == "controller":
        given = config.getoption("--grade-dir", None)
        if given:
            state.grade_dir = Path(given)
        else:
            state.grade_dir = Path(tempfile.mkdtemp(prefix="dl-ch2-grade-"))
            state.own_grade_dir = True
        restarts = config.getoption("maxworkerrestart", None)
        n = int(config.getoption("numprocesses"))
        state.max_restarts = int(restarts) if restarts is not None else 4 * n
        state.isolation = {
            "workers": n,
            "start_method": "spawn (execnet popen: a fresh interpreter per worker)",
            "max_worker_restart": state.max_restarts,
            "memory_limit_gib_per_worker": config.getoption("--memory-limit"),
            "scratch_cwd_per_worker": True,
        }
    else:
        state.isolation.setdefault("workers", 0)
    state.isolation["spec_timeout_s"] = config.getoption("--spec-timeout")
    state.isolation["slow_spec_timeout_s"] = config.getoption("--slow-spec-timeout")
    state.isolation["budget_s"] = budget
    if state.role == "controller":
        _expectations(config, state)  # a bad file is a usage error here, not in a worker
    if state.role != "worker" and not config.pluginmanager.hasplugin("timeout"):
        warnings.warn("pytest-timeout is not installed: specs run without a timeout", stacklevel=1)


def pytest_unconfigure(config: pytest.Config) -> None:
    state = config.stash.get(_STATE_KEY, None)
    if state is None:
        return
    if state.timer is not None:
        state.timer.cancel()
    if state.own_grade_dir and state.grade_dir is not None:
        import shutil

        shutil.rmtree(state.grade_dir, ignore_errors=True)


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """xdist controller: tell each (re)started worker where the grade's scratch lives."""
    state = node.config.stash[_STATE_KEY]
    if state.grade_dir is not None:
        node.workerinput["dl_ch2_grade_dir"] = str(state.grade_dir)


def _spec_timeout(config: pytest.Config, item: pytest.Item) -> float:
    if item.get_closest_marker("slow") is not None:
        return float(config.getoption("--slow-spec-timeout"))
    return float(config.getoption("--spec-timeout"))


def pytest_report_header(config: pytest.Config) -> list[str]:
    state = config.stash[_STATE_KEY]
    a = state.meta
    if a is None:
        return [
            f"dl-ch2 conformance {suite_version()}: adapter {state.spec!r} FAILED TO LOAD: "
            f"{state.load_error}"
        ]
    lib_text = ", ".join(f"{k} {v}" for k, v in a.library_versions.items())
    iso = state.isolation
    where = (
        f"isolation: {iso['workers']} spawned worker(s), memory cap "
        f"{iso['memory_limit_gib_per_worker']:g} GiB each, scratch cwd, up to "
        f"{iso['max_worker_restart']} restarts"
        if state.role == "controller"
        else "isolation: none (in-process; use -n 1 or `python -m conformance grade`)"
    )
    budget = "none" if state.budget is None else f"{state.budget:g} s"
    return [
        f"dl-ch2 conformance suite {suite_version()}",
        f"implementation: {a.name} {a.version} (--impl {state.spec})",
        f"device: {state.device}; dtype: {state.dtype}; capabilities: "
        f"{', '.join(sorted(a.capabilities)) or 'none'}",
        f"python {platform.python_version()}, numpy {np.__version__}"
        + (f", {lib_text}" if lib_text else ""),
        f"{where}; spec timeout {iso['spec_timeout_s']:g} s (slow "
        f"{iso['slow_spec_timeout_s']:g} s); budget {budget}",
    ]


def _expectations(config: pytest.Config, state: State) -> list[tuple[str, str, str]]:
    path = config.getoption("--expectations", None)
    if path is None and state.meta is not None:
        path = state.meta.expectations_file
        if path is None:
            builtin = EXPECTATIONS_DIR / f"{state.spec}.txt"
            path = str(builtin) if builtin.exists() else None
    if path is None:
        return []
    entries = []
    full = Path(path) if Path(path).is_absolute() else state.origin_cwd / path
    try:
        text = full.read_text()
    except OSError as exc:
        raise pytest.UsageError(f"expectations file {path}: {exc.strerror or exc}") from exc
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        body, _, comment = line.partition("#")
        parts = body.split()
        if len(parts) != 2 or parts[0] not in ("skip", "xfail") or not comment.strip():
            raise pytest.UsageError(
                f"{path}:{n}: expected 'skip|xfail <test-id pattern>  # why', got {raw!r}"
            )
        entries.append((parts[0], parts[1], comment.strip()))
    return entries


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    state = config.stash[_STATE_KEY]
    if state.meta is None:
        return
    claimed = set(state.meta.capabilities)
    has_timeout = config.pluginmanager.hasplugin("timeout")
    for item in items:
        for mark in item.iter_markers("requires"):
            cap = mark.args[0]
            if cap not in CAPABILITIES:
                raise pytest.UsageError(f"{item.nodeid}: unknown capability {cap!r}")
            if cap not in claimed:
                item.add_marker(pytest.mark.skip(reason=f"{NOT_CLAIMED}: {cap}"))
        if has_timeout and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(_spec_timeout(config, item), method="thread"))
    entries = _expectations(config, state)
    used = set()
    for item in items:
        for i, (kind, pattern, why) in enumerate(entries):
            if fnmatch.fnmatch(item.nodeid, pattern) or fnmatch.fnmatch(item.name, pattern):
                used.add(i)
                reason = f"expectation file: {why}"
                if kind == "skip":
                    item.add_marker(pytest.mark.skip(reason=reason))
                else:
                    item.add_marker(pytest.mark.xfail(reason=reason, strict=True))
    for i, (kind, pattern, _why) in enumerate(entries):
        if i not in used:
            msg = f"expectation '{kind} {pattern}' matches no spec"
            state.unmatched.append(msg)
            warnings.warn(msg, stacklevel=1)
    if state.role == "worker" and state.grade_dir is not None:
        # the controller sees ids, never items: leave it their sections and timeouts
        # (written here, before xdist tells the controller that collection finished)
        wid = config.workerinput.get("workerid", "gw")  # type: ignore[attr-defined]
        sidecar = {"specs": _spec_infos(items), "warnings": state.unmatched}
        atomic_write(state.grade_dir / f"specs-{wid}.json", json.dumps(sidecar))


def _spec_infos(items: Sequence[pytest.Item]) -> dict[str, dict[str, Any]]:
    return {
        item.nodeid: {
            "section": _section_of(item),
            "erratum": item.get_closest_marker("erratum") is not None,
            "timeout": _timeout_of(item),
            "requires": _requires_of(item),
        }
        for item in items
    }


@pytest.hookimpl(trylast=True)
def pytest_collection_finish(session: pytest.Session) -> None:
    state = session.config.stash[_STATE_KEY]
    if state.role == "worker":
        return
    state.spec_info = _spec_infos(session.items)
    _set_collected(state, [item.nodeid for item in session.items])


def _requires_of(item: pytest.Item) -> list[str]:
    # the capabilities a spec needs: a rubric leaves out specs its assignment does not cover
    return sorted({str(m.args[0]) for m in item.iter_markers("requires")})


def _timeout_of(item: pytest.Item) -> float | None:
    mark = item.get_closest_marker("timeout")
    if mark is None:
        return None
    value = mark.args[0] if mark.args else mark.kwargs.get("timeout")
    return float(value) if value is not None else None


def _set_collected(state: State, ids: Sequence[str]) -> None:
    if state.collected:
        return
    state.collected = list(ids)
    for nodeid in ids:
        state.results.setdefault(nodeid, _record(state, nodeid))


def _record(state: State, nodeid: str) -> dict[str, Any]:
    info = state.spec_info.get(nodeid, {})
    return {
        "id": nodeid,
        "section": info.get("section") or _section_from_id(nodeid),
        "outcome": None,
        "verb": None,
        "message": None,
        "erratum": bool(info.get("erratum", False)),
        "requires": list(info.get("requires", [])),
    }


def _section_from_id(nodeid: str) -> str:
    m = re.search(r"test_s(\d+)_(\d+)_", nodeid)
    return f"{m.group(1)}.{m.group(2)}" if m else "other"


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_node_collection_finished(node: Any, ids: Sequence[str]) -> None:
    state = node.config.stash[_STATE_KEY]
    if not state.spec_info and state.grade_dir is not None:
        path = state.grade_dir / f"specs-{node.gateway.id}.json"
        try:
            sidecar = json.loads(path.read_text())
            state.spec_info = sidecar["specs"]
            state.unmatched = list(sidecar["warnings"])
        except (OSError, ValueError, KeyError):
            state.spec_info = {}
    _set_collected(state, ids)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    if error is not None:
        state = node.config.stash[_STATE_KEY]
        state.crashes += 1
        state.last_node_error = str(error)


def pytest_collectreport(report: pytest.CollectReport) -> None:
    if report.failed:
        config = _CONFIG.get("config")
        if config is not None:
            config.stash[_STATE_KEY].collect_errors.append(report.nodeid or "(session)")


def pytest_keyboard_interrupt(excinfo: pytest.ExceptionInfo[BaseException]) -> None:
    config = _CONFIG.get("config")
    if config is not None:
        state = config.stash[_STATE_KEY]
        text = str(excinfo.value).strip()
        state.interrupt = text or excinfo.typename
        _stop_workers(state)


def pytest_runtest_logstart(nodeid: str, location: Any) -> None:
    config = _CONFIG.get("config")
    if config is not None:
        config.stash[_STATE_KEY].started[nodeid] = time.monotonic()


@pytest.fixture(scope="session")
def impl_state(request: pytest.FixtureRequest) -> State:
    return request.config.stash[_STATE_KEY]


@pytest.fixture
def impl(impl_state: State) -> Impl:
    if impl_state.adapter is None:
        pytest.fail(f"the adapter could not be loaded: {impl_state.load_error}", pytrace=False)
    return Impl(impl_state.adapter, impl_state.spec, impl_state.dtype, impl_state.device)


def _section_of(item: pytest.Item) -> str:
    mark = item.get_closest_marker("section")
    return str(mark.args[0]) if mark else "other"


def _crash_message(state: State, nodeid: str) -> str:
    started = state.started.get(nodeid)
    elapsed = None if started is None else time.monotonic() - started
    timeout = state.spec_info.get(nodeid, {}).get("timeout")
    if state.last_node_error == "keyboard-interrupt":
        return (
            "interrupted: a KeyboardInterrupt (raised by the implementation, or Ctrl-C) "
            "stopped the worker while this spec ran; the grade stops here"
        )
    if elapsed is not None and timeout is not None and elapsed >= 0.95 * timeout:
        return (
            f"timed out: no result within the per-spec timeout of {timeout:g} s "
            "(pytest-timeout stopped the worker; grading went on in a fresh one)"
        )
    took = "" if elapsed is None or elapsed < 0.5 else f" after {elapsed:.1f} s"
    return (
        f"the worker process running this spec died{took} (the implementation ended the "
        "process: os._exit, a segfault, a kill or the memory cap); grading went on in a "
        "fresh worker"
    )


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    # runs in the controlling process also under xdist, so the card sees every spec
    config = getattr(report, "config", None) or _CONFIG.get("config")
    if config is None:
        return
    state = config.stash[_STATE_KEY]
    if state.role == "worker":
        return
    if report.nodeid not in state.results:
        state.collected.append(report.nodeid)
        state.results[report.nodeid] = _record(state, report.nodeid)
    rec = state.results[report.nodeid]
    props: dict[str, Any] = dict(report.user_properties)
    if props.get("section"):
        rec["section"] = props["section"]
    if props.get("erratum"):
        rec["erratum"] = True
    if props.get("requires"):
        rec["requires"] = list(props["requires"])
    if props.get("verbs"):
        verbs = [v for v in props["verbs"] if v not in _CONVERSIONS]
        rec["verb"] = verbs[0] if verbs else props["verbs"][0]
    crashed = report.when not in ("setup", "call", "teardown")
    if crashed and report.failed:
        rec["outcome"], rec["message"] = "failed", _crash_message(state, report.nodeid)
    elif report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
        if report.skipped:
            reason = (
                report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
            )
            if hasattr(report, "wasxfail"):
                rec["outcome"], rec["message"] = "xfailed", str(report.wasxfail)
            elif NOT_CLAIMED in reason:
                rec["outcome"], rec["message"] = "not claimed", reason.split("Skipped: ")[-1]
            else:
                rec["outcome"], rec["message"] = "skipped", reason.split("Skipped: ")[-1]
        elif report.failed:
            rec["outcome"] = "failed"
            rec["message"] = props.get("message") or _short(report) or "failed"
        elif report.passed and rec["outcome"] is None:
            rec["outcome"] = "xpassed" if hasattr(report, "wasxfail") else "passed"
    elif report.when == "teardown" and report.failed:
        rec["outcome"], rec["message"] = "failed", _short(report) or "teardown failed"
    _snapshot(config, state, force=crashed)


_CONFIG: dict[str, pytest.Config] = {}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Any:
    outcome = yield
    rep = outcome.get_result()
    if rep.failed and call.excinfo is not None:
        text = str(call.excinfo.value).strip()
        first = text.splitlines()[0] if text else ""
        if not isinstance(call.excinfo.value, pytest.fail.Exception):
            # not the harness's own verdict: an error escaped the spec (SystemExit, ...)
            first = f"{call.excinfo.typename}: {first}" if first else call.excinfo.typename
            if not isinstance(call.excinfo.value, Exception):
                first += " (the implementation must not end or interrupt the process)"
        rep.user_properties.append(("message", first[:300]))
    if call.when == "call":
        impl_obj = getattr(item, "funcargs", {}).get("impl")
        calls = getattr(impl_obj, "calls", None) or []
        verbs: list[str] = []
        for text in calls:
            m = re.search(r"impl\.(\w+)\(", str(text))
            if m and m.group(1) not in verbs:
                verbs.append(m.group(1))
        if verbs:
            rep.user_properties.append(("verbs", verbs))


def _budget_ran_out(state: State) -> None:
    """Timer thread: stop the run with a KeyboardInterrupt in the main thread."""
    state.stop_reason = f"the grading budget of {state.budget:g} s ran out"
    os.kill(os.getpid(), signal.SIGINT)


def _stop_workers(state: State) -> None:
    """Controller, once interrupted: kill its workers now (one may hang inside a spec).

    The workers are this process's children (execnet popen): found in /proc where there is
    one, else from the pid files each worker leaves in the grade directory.
    """
    if state.role != "controller" or state.grade_dir is None:
        return
    me = os.getpid()
    pids = set()
    proc = Path("/proc")
    if proc.is_dir():
        for entry in proc.iterdir():
            if entry.name.isdigit() and _parent_of(int(entry.name)) == me:
                pids.add(int(entry.name))
    else:
        for pid_file in state.grade_dir.glob("pid-*"):
            try:
                if int(pid_file.read_text()) == me:
                    pids.add(int(pid_file.name.split("-", 1)[1]))
            except (OSError, ValueError):
                continue
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def _parent_of(pid: int) -> int | None:
    """The parent pid of ``pid`` from /proc (None if it cannot be read)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat.rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    _CONFIG["config"] = session.config
    state = session.config.stash[_STATE_KEY]
    deadline = session.config.getoption("--deadline", None)
    if state.role != "worker" and (state.budget is not None or deadline is not None):
        left = math.inf if state.budget is None else state.budget - (time.monotonic() - state.t0)
        if deadline is not None:
            left = min(left, deadline - time.time())
            state.budget = state.budget if state.budget is not None else left
        if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
            # started from a background job or under nohup, which ignore SIGINT: the budget
            # (and the supervisor) stop this run with one, so take it back
            signal.signal(signal.SIGINT, signal.default_int_handler)
        state.timer = threading.Timer(max(0.0, left), _budget_ran_out, args=(state,))
        state.timer.daemon = True
        state.timer.start()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    state = session.config.stash[_STATE_KEY]
    if state.timer is not None:
        state.timer.cancel()
    state.exitstatus = int(exitstatus)


def pytest_itemcollected(item: pytest.Item) -> None:
    item.user_properties.append(("section", _section_of(item)))
    if item.get_closest_marker("erratum") is not None:
        item.user_properties.append(("erratum", True))
    item.user_properties.append(("requires", _requires_of(item)))


def _short(report: pytest.TestReport) -> str:
    text = str(report.longrepr) if report.longrepr is not None else ""
    return text.strip().splitlines()[-1][:300] if text.strip() else ""


def _completion(state: State, final: bool) -> tuple[bool, str | None, list[str]]:
    not_run = [i for i in state.collected if state.results[i]["outcome"] is None]
    if not final:
        return False, SNAPSHOT_REASON, not_run
    reason = None
    if state.stop_reason:
        reason = state.stop_reason
    elif state.interrupt:
        reason = f"interrupted: {state.interrupt}"
    elif state.max_restarts is not None and state.crashes > state.max_restarts:
        reason = (
            f"worker restarts used up: {state.crashes} worker crashes, at most "
            f"{state.max_restarts} restarts allowed (--max-worker-restart)"
        )
    elif state.collect_errors:
        reason = f"errors while collecting specs: {', '.join(state.collect_errors)}"
    elif state.exitstatus == int(pytest.ExitCode.INTERRUPTED):
        reason = "interrupted"
    elif state.exitstatus == int(pytest.ExitCode.INTERNAL_ERROR):
        reason = "internal error of the test runner"
    elif not_run:
        reason = f"{len(not_run)} collected specs did not run"
    return reason is None, reason, not_run


def build_report(state: State, *, final: bool = True) -> dict[str, Any]:
    """The report card as JSON-able data (schema ``dl-ch2-conformance-report/2``)."""
    complete, reason, not_run = _completion(state, final)
    specs = []
    for nodeid in state.collected:
        rec = dict(state.results[nodeid])
        if rec["outcome"] is None:
            rec["outcome"] = "not run"
        if rec["outcome"] in ("passed", "xpassed"):
            rec["message"] = None
        specs.append(rec)
    meta = state.meta
    report = empty_report(meta, state.spec, state.dtype, state.device)
    report.update(
        {
            "complete": complete,
            "incomplete_reason": reason,
            "not_run": sorted(not_run),
            "specs": sorted(specs, key=lambda r: r["id"]),
            "warnings": list(state.unmatched),
            "isolation": dict(state.isolation),
        }
    )
    _fill_counts(report)
    return report


def empty_report(meta: AdapterMeta | None, spec: str, dtype: str, device: str) -> dict[str, Any]:
    """A report with no specs (what a grade that died before collecting anything leaves)."""
    report: dict[str, Any] = {
        "schema": REPORT_SCHEMA,
        "suite_version": suite_version(),
        "implementation": {
            "spec": spec,
            "name": getattr(meta, "name", None),
            "version": getattr(meta, "version", None),
            "capabilities": sorted(getattr(meta, "capabilities", [])),
            "library_versions": dict(getattr(meta, "library_versions", {}) or {}),
        },
        "device": device,
        "dtype": dtype,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "platform": sys.platform,
        "complete": False,
        "incomplete_reason": SNAPSHOT_REASON,
        "not_run": [],
        "totals": {},
        "sections": {},
        "specs": [],
        "warnings": [],
    }
    _fill_counts(report)
    return report


_TOTAL_KEYS = {
    "passed": "passed",
    "xpassed": "passed",
    "failed": "failed",
    "not run": "not_run",
    "not claimed": "not_claimed",
    "skipped": "skipped",
    "xfailed": "xfailed",
}


def _fill_counts(report: dict[str, Any]) -> None:
    """Totals and per-section counts from ``report["specs"]``: they always add up."""
    totals = dict.fromkeys(["passed", "failed", "not_run", "not_claimed", "skipped", "xfailed"], 0)
    by_section: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for r in report["specs"]:
        key = _TOTAL_KEYS[r["outcome"]]
        totals[key] += 1
        by_section[r["section"]][key] += 1
    report["totals"] = {"collected": len(report["specs"]), **totals}
    summary = {}
    for sec in sorted(by_section):
        counts = by_section[sec]
        judged = counts["passed"] + counts["failed"] + counts["not_run"]
        summary[sec] = {
            "title": SECTIONS.get(sec, sec),
            "passed": counts["passed"],
            "failed": counts["failed"],
            "not_run": counts["not_run"],
            "not_claimed": counts["not_claimed"],
            "skipped": counts["skipped"],
            "xfailed": counts["xfailed"],
            "total": sum(counts.values()),
            "percent_passed": round(100.0 * counts["passed"] / judged, 1) if judged else None,
        }
    report["sections"] = summary


def report_markdown(report: dict[str, Any]) -> str:
    impl = report["implementation"]
    lines = [
        f"## dl-ch2 conformance: {impl['name']} {impl['version']}",
        "",
        f"suite {report['suite_version']}, device {report['device']}, dtype {report['dtype']}, "
        f"python {report['python']}, numpy {report['numpy']}",
        "",
    ]
    if not report.get("complete", False):
        lines += [
            f"**INCOMPLETE**: {report.get('incomplete_reason')}; "
            f"{len(report.get('not_run', []))} specs not run, counted as not passed.",
            "",
        ]
    lines += [
        "| section | passed | failed | not run | not claimed | skipped | total | passed % |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for _sec, s in report["sections"].items():
        pct = "-" if s["percent_passed"] is None else f"{s['percent_passed']:.1f}"
        lines.append(
            f"| {s['title']} | {s['passed']} | {s['failed']} | {s['not_run']} | "
            f"{s['not_claimed']} | {s['skipped'] + s['xfailed']} | {s['total']} | {pct} |"
        )
    t = report["totals"]
    judged = t["passed"] + t["failed"] + t["not_run"]
    pct = f"{100.0 * t['passed'] / judged:.1f}" if judged else "-"
    lines.append(
        f"| **all** | {t['passed']} | {t['failed']} | {t['not_run']} | {t['not_claimed']} | "
        f"{t['skipped'] + t['xfailed']} | {t['collected']} | {pct} |"
    )
    failed = [r for r in report["specs"] if r["outcome"] == "failed"]
    if failed:
        lines += ["", "Failed specs:", ""]
        lines += [f"- `{r['id']}`: {(r['message'] or '').splitlines()[0]}" for r in failed]
    not_run = report.get("not_run", [])
    if not_run:
        lines += ["", "Specs not run (counted as not passed):", ""]
        lines += [f"- `{i}`" for i in not_run[:25]]
        if len(not_run) > 25:
            lines.append(f"- ... and {len(not_run) - 25} more (see the JSON report)")
    for w in report["warnings"]:
        lines.append(f"\nwarning: {w}")
    return "\n".join(lines) + "\n"


def _snapshot(config: pytest.Config, state: State, *, force: bool = False) -> None:
    """Write the report so far (marked incomplete) now and then, in case the run is killed."""
    path = config.getoption("--report-json", None)
    now = time.monotonic()
    if not path or (not force and now - state.last_snapshot < 1.0):
        return
    state.last_snapshot = now
    atomic_write(path, json.dumps(build_report(state, final=False), indent=1) + "\n")


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    state = config.stash[_STATE_KEY]
    if state.role == "worker" or state.meta is None or config.option.collectonly:
        return
    state.exitstatus = int(exitstatus)
    report = build_report(state)
    md = report_markdown(report)
    terminalreporter.write_sep("=", "dl-ch2 conformance report card")
    terminalreporter.write_line(md)
    if config.getoption("--report-json", None):
        atomic_write(config.getoption("--report-json"), json.dumps(report, indent=1) + "\n")
    if config.getoption("--report-md", None):
        atomic_write(config.getoption("--report-md"), md)
