"""Grading ends, with a report whose totals equal the specs collected, whatever the adapter does.

Each test writes a tiny throwaway adapter to tmp_path (the worked student example with one
verb broken: self-contained, as a submission is, so it runs in the unprivileged worker when
the tests run as root, as in CI) and grades it through ``python -m conformance grade`` with
small timeouts/budgets. Misbehaviours that fire once (guarded by a flag file in a folder
the worker may write) fail exactly one spec whatever the specs are named.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from worker_shared import shared_dir as worker_shared_dir

from conformance.adapter import AdapterLoadError, load_adapter
from conformance.grading.runner import exit_code

ROOT = Path(__file__).resolve().parents[1]

STUDENT = (ROOT / "conformance" / "examples" / "student_numpy.py").read_text()

HEADER = (
    STUDENT
    + """
import os, sys, time

NumpyAdapter = StudentAdapter
FLAGS = {flags!r}

def first_time(what):
    # True once per grade (the flag file survives worker restarts)
    try:
        fd = os.open(os.path.join(FLAGS, what), os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return False
    os.close(fd)
    return True
"""
)


def shared_dir(tmp_path: Path) -> Path:
    """A folder the unprivileged worker may write (tmp_path's parents are root's own)."""
    link = tmp_path / "shared"
    if not link.exists():
        folder = worker_shared_dir("dl-ch2-test-shared-")  # as root the worker sees no other
        link.symlink_to(folder)
    return link.resolve()


def write_adapter(tmp_path: Path, body: str, name: str = "adapter") -> Path:
    flags = shared_dir(tmp_path) / "flags"
    flags.mkdir(exist_ok=True)
    flags.chmod(0o777)
    path = tmp_path / f"{name}.py"
    path.write_text(HEADER.replace("{flags!r}", repr(str(flags))) + textwrap.dedent(body))
    return path


def _sigint(disposition: Any) -> Callable[[], None]:
    """A ``preexec_fn`` giving the child this SIGINT disposition, whatever the test's is."""
    return lambda: signal.signal(signal.SIGINT, disposition) and None


def run_grade(
    tmp_path: Path,
    adapter: str,
    *args: str,
    timeout: float = 300,
    sigint: Any = signal.SIG_DFL,
) -> tuple[int, str, dict[str, Any], float]:
    report = tmp_path / "report.json"
    cmd = [
        sys.executable,
        "-m",
        "conformance",
        "grade",
        adapter,
        "--report-json",
        str(report),
        "--report-md",
        str(tmp_path / "card.md"),
        *args,
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    t0 = time.monotonic()
    proc = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=timeout,
        env=env,
        preexec_fn=_sigint(sigint),
    )
    elapsed = time.monotonic() - t0
    data = json.loads(report.read_text()) if report.exists() else {}
    return proc.returncode, proc.stdout + proc.stderr, data, elapsed


def assert_totals_add_up(report: dict[str, Any]) -> None:
    t = report["totals"]
    parts = ("passed", "failed", "not_run", "not_claimed", "skipped", "xfailed")
    assert t["collected"] == sum(t[k] for k in parts) == len(report["specs"]) > 0
    assert t["not_run"] == len(report["not_run"])
    assert sorted(r["id"] for r in report["specs"] if r["outcome"] == "not run") == sorted(
        report["not_run"]
    )
    for s in report["sections"].values():
        assert s["total"] == sum(s[k] for k in parts)


def failed(report: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for r in report["specs"] if r["outcome"] == "failed"]


CRASHERS = """
import ctypes

class Crashers(NumpyAdapter):
    name = "crashers"
    def relu(self, x):
        if first_time("relu"):
            time.sleep(1000)            # hangs in a sleep
        return super().relu(x)
    def add(self, x, y):
        if first_time("add"):
            while True:                 # hangs in a busy loop
                pass
        return super().add(x, y)
    def transpose(self, x):
        if first_time("transpose"):
            os._exit(0)                 # ends its process, "successfully"
        return super().transpose(x)
    def dot(self, x, y):
        if first_time("dot"):
            ctypes.string_at(0)         # segfault
        return super().dot(x, y)
    def reshape(self, x, shape):
        if first_time("reshape"):
            sys.exit(0)
        return super().reshape(x, shape)

ADAPTER = Crashers()
"""


def test_hangs_exits_and_segfaults_fail_their_spec_and_grading_goes_on(tmp_path: Path) -> None:
    # -n 2: today's bug was a card that dropped the crashed specs under -n 2
    path = write_adapter(tmp_path, CRASHERS)
    rc, out, report, _ = run_grade(
        tmp_path, str(path), "--spec-timeout", "2", "-n", "2", "--", "-k", "s2_3"
    )
    assert rc == 1, out[-3000:]
    assert "INTERNALERROR" not in out
    assert report["complete"] is True and report["incomplete_reason"] is None
    assert report["not_run"] == []
    assert_totals_add_up(report)
    messages = [r["message"] for r in failed(report)]
    assert len(messages) == 5, messages
    assert sum("timed out" in m and "2 s" in m for m in messages) == 2, messages
    assert sum("worker process running the submission died" in m for m in messages) == 2, messages
    assert sum("raised SystemExit" in m for m in messages) == 1, messages
    assert report["totals"]["failed"] == 5 and report["totals"]["passed"] >= 20
    assert report["sections"]["2.3"]["failed"] == 5
    card = (tmp_path / "card.md").read_text()
    assert "| **all** |" in card and "| 5 |" in card.split("| **all** |")[1].split("\n")[0]
    for r in failed(report):
        assert r["id"] in card


def test_keyboard_interrupt_in_a_verb_fails_only_that_spec(tmp_path: Path) -> None:
    # the worker catches it: a submission cannot stop the grade (or make it incomplete)
    path = write_adapter(
        tmp_path,
        """
        class Interrupting(NumpyAdapter):
            name = "interrupting"
            def relu(self, x):
                if first_time("relu"):
                    raise KeyboardInterrupt
                return super().relu(x)

        ADAPTER = Interrupting()
        """,
    )
    rc, out, report, _ = run_grade(tmp_path, str(path), "--spec-timeout", "5", "--", "-k", "s2_3")
    assert rc == 1, out[-3000:]
    assert report["complete"] is True and report["not_run"] == []
    assert_totals_add_up(report)
    (only,) = failed(report)
    assert "raised KeyboardInterrupt" in only["message"]
    assert "must not end or interrupt the process" in only["message"]


@pytest.mark.parametrize(
    "sigint", [signal.SIG_DFL, signal.SIG_IGN], ids=["sigint-default", "sigint-ignored"]
)
def test_budget_stops_a_hanging_grade_within_the_budget(tmp_path: Path, sigint: Any) -> None:
    # sigint-ignored: started from a background job or nohup, which ignore SIGINT; the
    # budget's own stop (a SIGINT to itself) must work there too
    path = write_adapter(
        tmp_path,
        """
        class Sleepy(NumpyAdapter):
            name = "sleepy"
            def relu(self, x):
                time.sleep(1000)

        ADAPTER = Sleepy()
        """,
    )
    budget = 15.0
    rc, out, report, elapsed = run_grade(
        tmp_path,
        str(path),
        *("--spec-timeout", "100", "--budget", str(budget), "--", "-k", "s2_3"),
        sigint=sigint,
    )
    assert rc == 3, out[-3000:]
    assert report["complete"] is False and "budget" in report["incomplete_reason"]
    assert report["not_run"]
    assert_totals_add_up(report)
    # the hanging spec is not run (stopped by the budget), not failed
    assert report["totals"]["failed"] == 0
    assert elapsed < budget + 5.0, f"the grade took {elapsed:.1f} s for a {budget} s budget"


def test_running_out_of_worker_restarts_is_incomplete(tmp_path: Path) -> None:
    path = write_adapter(
        tmp_path,
        """
        class AlwaysExits(NumpyAdapter):
            name = "always-exits"
            def asarray(self, x, dtype=None):
                os._exit(3)

        ADAPTER = AlwaysExits()
        """,
    )
    rc, out, report, _ = run_grade(
        tmp_path, str(path), "--max-worker-restart", "1", "--", "-k", "s2_3"
    )
    assert rc == 3, out[-3000:]
    assert "restarts used up" in report["incomplete_reason"]
    assert report["totals"]["failed"] == 2 and report["totals"]["passed"] == 0
    assert_totals_add_up(report)


def test_ctrl_c_on_the_grade_reports_incomplete(tmp_path: Path) -> None:
    path = write_adapter(
        tmp_path,
        """
        class Sleepy(NumpyAdapter):
            name = "sleepy"
            def relu(self, x):
                first_time("relu")
                time.sleep(1000)

        ADAPTER = Sleepy()
        """,
    )
    report = tmp_path / "report.json"
    cmd = [sys.executable, "-m", "conformance", "grade", str(path), "--report-json", str(report)]
    cmd += ["--spec-timeout", "100", "--", "-k", "s2_3"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        preexec_fn=_sigint(signal.SIG_DFL),  # Ctrl-C from a terminal, even under nohup
    )
    flag = shared_dir(tmp_path) / "flags" / "relu"
    deadline = time.monotonic() + 120
    while not flag.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert flag.exists(), "no spec reached the sleeping verb"
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 3, out.decode()[-3000:]
    data = json.loads(report.read_text())
    assert data["complete"] is False and "interrupt" in data["incomplete_reason"].lower()
    assert_totals_add_up(data)


def test_the_submission_runs_in_a_capped_worker_process_never_in_the_grader(
    tmp_path: Path,
) -> None:
    log = shared_dir(tmp_path) / "where.jsonl"
    path = write_adapter(
        tmp_path,
        f"""
        import json, resource

        def note(event):
            cmdline = open("/proc/self/cmdline", "rb").read().replace(b"\\0", b" ").decode()
            with open({str(log)!r}, "a") as f:
                f.write(json.dumps({{
                    "event": event, "pid": os.getpid(), "cwd": os.getcwd(),
                    "cmdline": cmdline, "uid": os.getuid(), "groups": os.getgroups(),
                    "rlimit_data": resource.getrlimit(resource.RLIMIT_DATA),
                    "path": sys.path,
                }}) + "\\n")

        note("import")

        class Noting(NumpyAdapter):
            name = "noting"
            def relu(self, x):
                note("relu")
                if first_time("alloc"):
                    bytearray(3 * 2**30)  # over the cap: MemoryError, not a swapping machine
                return super().relu(x)

        ADAPTER = Noting()
        """,
    )
    os.chmod(log.parent, 0o777)
    log.touch(mode=0o666)  # the probe's worker and the grade's may run as different uids
    log.chmod(0o666)
    rc, out, report, _ = run_grade(
        tmp_path, str(path), "--memory-limit", "1", "--", "-k", "elementwise_golden"
    )
    assert rc == 1, out[-3000:]
    assert len(failed(report)) == 1 and "MemoryError" in failed(report)[0]["message"]
    assert report["complete"] is True
    events = [json.loads(line) for line in log.read_text().splitlines()]
    imports = [e for e in events if e["event"] == "import"]
    calls = [e for e in events if e["event"] == "relu"]
    assert calls
    # only workers import the submission, never pytest: the grade's one worker (issue 31: no
    # probe's worker before it; the MemoryError is the verb's, the worker lives on)
    assert all("worker.py" in e["cmdline"] and "pytest" not in e["cmdline"] for e in imports)
    assert len(imports) == 1
    for e in calls:
        assert e["rlimit_data"] == [2**30, 2**30]  # soft and hard: it cannot raise it
        assert "dl-ch2-grade-" in e["cwd"] and Path(e["cwd"]).name.startswith("scratch-")
        assert e["pid"] != os.getpid()
        if os.geteuid() == 0:  # as in CI: someone else, seeing none of the grader's files
            assert e["uid"] != 0 and e["groups"] == []
            assert not any(str(ROOT) in p for p in e["path"]), e["path"]
    level = report["isolation"]["level"]
    assert level.startswith("unprivileged") if os.geteuid() == 0 else "NOT ISOLATED" in level


BAD_METADATA = [
    ("dtypes = ()", "'dtypes'"),
    ("dtypes = ('float16',)", "'dtypes'"),
    ("dtypes = 'float64'", "'dtypes'"),
    ("library_versions = ['numpy']", "'library_versions'"),
    ("capabilities = 'training'", "'capabilities'"),
    ("capabilities = frozenset({'telepathy'})", "'capabilities'"),
    ("name = 42", "'name'"),
    ("version = None", "'version'"),
    ("devices = 'cpu'", "'devices'"),
]


@pytest.mark.parametrize(("line", "attr"), BAD_METADATA, ids=[b[0] for b in BAD_METADATA])
def test_bad_metadata_is_an_error_naming_the_attribute(
    line: str, attr: str, tmp_path: Path
) -> None:
    path = write_adapter(
        tmp_path,
        f"""
        class Bad(NumpyAdapter):
            {line}

        ADAPTER = Bad()
        """,
    )
    with pytest.raises(AdapterLoadError, match=attr):
        load_adapter(str(path))
    if line.startswith(("dtypes = ()", "capabilities = 'training'", "library_versions")):
        rc, out, _, _ = run_grade(tmp_path, str(path))
        assert rc == 2, out[-2000:]
        assert attr in out and "INTERNALERROR" not in out and "Traceback" not in out
        assert out.strip().count("\n") < 3, out  # one line, not a pytest session


def test_dtype_the_adapter_does_not_declare_is_a_usage_error(tmp_path: Path) -> None:
    path = write_adapter(
        tmp_path,
        """
        class Only64(NumpyAdapter):
            name = "only64"
            dtypes = ("float64",)

        ADAPTER = Only64()
        """,
    )
    rc, out, _, _ = run_grade(tmp_path, str(path), "--dtype", "float32")
    assert rc == 2
    assert "--dtype float32" in out and "float64" in out and "INTERNALERROR" not in out


def test_missing_adapter_file_is_a_usage_error(tmp_path: Path) -> None:
    rc, out, _, _ = run_grade(tmp_path, str(tmp_path / "nope.py"))
    assert rc == 2 and "does not exist" in out
    rc, out, _, _ = run_grade(tmp_path, "numpy", "--", "-n", "0")  # no way around the workers
    assert rc == 2 and "isolation" in out
    rc, out, _, _ = run_grade(tmp_path, "numpy", "--expectations", str(tmp_path / "nope.txt"))
    assert rc == 2 and "nope.txt" in out and "INTERNALERROR" not in out


def test_dl_ch2_grade_is_the_same_command(tmp_path: Path) -> None:
    from dl_ch2_tools.cli import main

    path = write_adapter(
        tmp_path,
        """
        class Bad(NumpyAdapter):
            capabilities = "training"

        ADAPTER = Bad()
        """,
    )
    assert main(["grade", str(path), "--budget", "60"]) == 2


def _report(outcomes: list[str], complete: bool = True) -> dict[str, Any]:
    from conformance.report import fill_counts as _fill_counts

    report: dict[str, Any] = {
        "complete": complete,
        "specs": [{"id": f"t{i}", "section": "2.3", "outcome": o} for i, o in enumerate(outcomes)],
    }
    _fill_counts(report)
    return report


def test_exit_codes_and_totals_from_the_report() -> None:
    passed = _report(["passed", "passed", "not claimed", "skipped"])
    assert passed["totals"] == {
        "collected": 4,
        "passed": 2,
        "failed": 0,
        "not_run": 0,
        "not_claimed": 1,
        "skipped": 1,
        "xfailed": 0,
    }
    assert exit_code(passed) == 0
    assert exit_code(_report(["passed", "failed"])) == 1
    incomplete = _report(["passed", "not run", "not run"], complete=False)
    assert exit_code(incomplete) == 3
    # not run counts as not passed: 1 of 3
    assert incomplete["sections"]["2.3"]["percent_passed"] == pytest.approx(33.3)


def test_a_killed_grade_reports_its_last_snapshot(tmp_path: Path) -> None:
    from conformance.grading.client import AdapterMeta
    from conformance.grading.runner import _final_report
    from conformance.report import SNAPSHOT_REASON

    meta = AdapterMeta("x", "1", ["cpu"], ["float64"], [])
    snapshot = _report(["passed", "failed", "not run"], complete=False)
    snapshot["incomplete_reason"] = SNAPSHOT_REASON
    snapshot["not_run"] = ["t2"]
    path = tmp_path / "report.json"
    path.write_text(json.dumps(snapshot))
    report, printed = _final_report(path, meta, "x.py", None, "killed past its budget", False)
    assert printed is False  # the killed process never printed its card: the runner does
    assert report["complete"] is False
    assert report["incomplete_reason"] == "killed past its budget"
    assert report["totals"]["collected"] == 3 and report["totals"]["not_run"] == 1
    assert exit_code(report) == 3
    # nothing written at all (killed before collection): still a report, incomplete
    report, printed = _final_report(tmp_path / "none.json", meta, "x.py", None, "killed", False)
    assert report["complete"] is False and report["totals"]["collected"] == 0
    assert exit_code(report) == 3
