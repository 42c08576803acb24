"""Issue 29: what a grader meets as a shell user and course staff would (the cheap checks).

Verbs an adapter provides through ``__getattr__`` are found; a hang at import names its
limit; options either apply or are refused, naming themselves; the gradebook of a resumed
batch re-grades what did not finish.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import pytest

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
