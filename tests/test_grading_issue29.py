"""Issue 29: what a grader meets as a shell user and course staff would (the cheap checks).

Verbs an adapter provides through ``__getattr__`` are found; a hang at import names its
limit; options either apply or are refused, naming themselves; the gradebook of a resumed
batch re-grades what did not finish.
"""

from __future__ import annotations

import csv
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from worker_shared import shared_dir

from conformance.adapter import AdapterLoadError
from conformance.grading.client import Connection, RemoteAdapter, plan
from conformance.grading.sandbox import Limits, release_uids

ROOT = Path(__file__).resolve().parents[1]
STUDENT = ROOT / "conformance" / "examples" / "student_numpy.py"

DELEGATE = """
class Delegate:
    name, version, devices = "delegate", "1", ("cpu",)
    dtypes = ("float64",)
    capabilities = frozenset()

    def __getattr__(self, verb):  # every verb comes from here: dir() does not list them
        if verb.startswith("_"):
            raise AttributeError(verb)
        return getattr(StudentAdapter(), verb)

ADAPTER = Delegate()
"""


def _connect(tmp_path: Path, source: str, timeout: float = 60.0) -> tuple[Connection, str]:
    sub = tmp_path / "sub.py"
    sub.write_text(source)
    target, iso, paths = plan(str(sub), packages=["numpy"], hide=[], limits=Limits(),
                              cwd=str(tmp_path))  # fmt: skip
    grade_dir = Path(tempfile.mkdtemp(prefix="dl-ch2-i29-"))  # reachable by the worker's uid
    grade_dir.chmod(0o711)
    conn = Connection(target, iso, grade_dir, paths=paths)
    conn.deadline = time.monotonic() + timeout
    return conn, target


def test_verbs_that_come_from_getattr_are_found(tmp_path: Path) -> None:
    conn, target = _connect(tmp_path, STUDENT.read_text() + DELEGATE)
    try:
        adapter = RemoteAdapter(conn, conn.start(), target)
        x = adapter.asarray([[1.0, 2.0], [3.0, 4.0]])
        assert adapter.to_numpy(adapter.dot(x, x)).tolist() == [[7.0, 10.0], [15.0, 22.0]]
        assert hasattr(adapter, "vector_add") and not hasattr(adapter, "no_such_verb")
    finally:
        conn.close()
        release_uids()
        shutil.rmtree(conn.grade_dir, ignore_errors=True)


def test_a_hang_at_import_is_reported_with_its_limit(tmp_path: Path) -> None:
    conn, _ = _connect(tmp_path, "import time\ntime.sleep(600)\nADAPTER = None\n")
    try:
        with pytest.raises(AdapterLoadError, match=r"longer than its limit of 2 s"):
            conn.start(time.monotonic() + 2)
    finally:
        conn.close()
        release_uids()
        shutil.rmtree(conn.grade_dir, ignore_errors=True)


# --- item 1: a resumed batch re-grades what did not finish --------------------------------

HOLD = """
import os, time

def _hold(where):
    if os.path.exists(os.path.join(FLAGS, "hold-" + where)):
        open(os.path.join(FLAGS, "started"), "w").close()
        time.sleep(3600)

_hold("import")
_relu = StudentAdapter.relu

def _held_relu(x):
    _hold("verb")
    return _relu(x)

StudentAdapter.relu = staticmethod(_held_relu)
"""
CORE = "[assignment]\ncovers = []\n"  # the core verbs: a short grade


def _batch_cmd(subs: Path, out: Path) -> list[str]:
    cmd = [sys.executable, "-m", "conformance", "grade-all", str(subs), "--out", str(out)]
    return [*cmd, "--rubric", str(subs.parent / "core.toml"), "--jobs", "1", "--no-progress"]


def _table(out: Path) -> dict[str, list[str]]:
    """The gradebook without its "graded" column (how each row came about)."""
    rows = list(csv.reader((out / "gradebook.csv").read_text().splitlines()))
    assert rows[0][-1] == "graded"
    return {r[0]: r[:-1] for r in rows[1:]}


@pytest.fixture(scope="module")
def batch(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, list[str]]]:
    """(the submissions, an uninterrupted run's output folder, its gradebook)."""
    flags = shared_dir("dl-ch2-i29-flags-")
    base = tmp_path_factory.mktemp("batch")
    subs = base / "subs"
    subs.mkdir()
    (base / "core.toml").write_text(CORE)
    (subs / "a.py").write_text(STUDENT.read_text())
    (subs / "b.py").write_text(f"FLAGS = {str(flags)!r}\n" + STUDENT.read_text() + HOLD)
    out = base / "out"
    proc = subprocess.run(_batch_cmd(subs, out), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    table = _table(out)
    assert [r[-2] for r in table.values()] == ["ok", "ok"], table
    return subs, out, table


@pytest.mark.parametrize(
    ("where", "signals", "code"),
    [("import", ["SIGINT"], 130), ("verb", ["SIGINT", "SIGINT"], 130), ("verb", ["SIGTERM"], 143)],
    ids=["ctrl-c-at-import", "ctrl-c-twice-in-a-verb", "sigterm-in-a-verb"],
)
def test_a_stopped_batch_resumes_to_the_gradebook_of_an_uninterrupted_run(
    tmp_path: Path, batch: tuple[Path, Path, dict[str, list[str]]], where: str,
    signals: list[str], code: int,
) -> None:  # fmt: skip
    subs, base_out, expected = batch
    flags = Path(re.findall(r"FLAGS = '([^']+)'", (subs / "b.py").read_text())[0])
    out = tmp_path / "out"
    shutil.copytree(base_out / "submissions" / "a.py", out / "submissions" / "a.py")
    (flags / f"hold-{where}").touch()
    (flags / "started").unlink(missing_ok=True)
    proc = subprocess.Popen(_batch_cmd(subs, out), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, preexec_fn=_default_sigint)  # fmt: skip
    deadline = time.monotonic() + 120
    while not (flags / "started").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    for sig in signals:
        proc.send_signal(getattr(signal, sig))
        time.sleep(0.5)
    output = proc.communicate(timeout=120)[0].decode()
    (flags / f"hold-{where}").unlink()
    assert proc.returncode == code, output[-3000:]
    stopped = _table(out)
    assert stopped["a.py"] == expected["a.py"] and stopped["b.py"][-2] != "ok", stopped
    resumed = subprocess.run(_batch_cmd(subs, out), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr[-3000:]
    assert _table(out) == expected
    graded = {r[0]: r[-1] for r in csv.reader((out / "gradebook.csv").read_text().splitlines())}
    assert graded["a.py"] == "reused" and graded["b.py"].startswith("regraded: was "), graded


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)
