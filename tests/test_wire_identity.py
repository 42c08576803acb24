"""Arrays sent twice within one spec are one object in the worker, as in-process (issue 27.7).

In-process, a spec that hands the implementation the same NumPy array twice hands it one
object, and what the implementation writes into an array it was given, the spec sees. Over
the wire the first send of an array carries its bytes and a token, a later send of the same
object (within one spec) the token alone; the worker forgets them between specs. The
grader's arrays are never written from the worker: the worker says, when asked, which of
them it wrote into, and a spec that would have seen the write in-process fails
(``Impl.check_unwritten``). What the worker says is untrusted; the attacks below show that
lying in it gains nothing a correct implementation would not get.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from worker_shared import worker_connection

from conformance.grading import wire
from conformance.grading.client import Connection, RemoteAdapter, WorkerLost, plan
from conformance.grading.sandbox import Limits, release_uids

ROOT = Path(__file__).resolve().parents[1]
CORRECT = ROOT / "tests" / "fixtures" / "student_bugs" / "correct.py"
UPDATE_SPEC = "test_update_weights_subtracts_lr_times_gradient_from_the_weights_given"

KEEPER = """
import sys

import numpy as np


class Keeper:
    name, version, devices = "keeper", "1", ("cpu",)
    dtypes = ("float64",)
    capabilities = frozenset()
    kept = []

    def same(self, a, b):
        return a is b

    def keep(self, *arrays):
        self.kept[:] = arrays
        return len(arrays)

    def is_kept(self, a):
        return any(a is k for k in self.kept)

    def scribble(self, value):
        for k in self.kept:
            k[...] = value

    def first(self, a):
        return float(np.asarray(a).reshape(-1)[0])

    def lie(self, mode):
        # the submission runs in the worker's process: it can rewrite the worker's answers
        answers = {
            "unwritten": lambda tokens: [False] * len(tokens),
            "written": lambda tokens: [True] * len(tokens),
            "too_many": lambda tokens: [True] * 1000,
            "huge": lambda tokens: [10**40] * len(tokens),
            "strings": lambda tokens: ["no"] * len(tokens),
        }
        sys.modules["wire"].Received.written = lambda self, tokens: answers[mode](tokens)

    def answer_references(self, token):
        sys.modules["wire"].encode = lambda *a, **k: {"r": token}


ADAPTER = Keeper()
"""


@pytest.fixture
def keeper(tmp_path: Path) -> Iterator[tuple[Connection, Any]]:
    conn, target = worker_connection(tmp_path, KEEPER, "dl-ch2-ident-", 120, max_restarts=20)
    grade_dir = conn.grade_dir
    try:
        yield conn, RemoteAdapter(conn, conn.start(), target)
    finally:
        conn.close()
        release_uids()
        shutil.rmtree(grade_dir, ignore_errors=True)


def test_an_array_sent_twice_in_one_spec_is_one_object_in_the_worker(keeper: Any) -> None:
    conn, adapter = keeper
    a, b = np.arange(6.0).reshape(2, 3), np.arange(6.0).reshape(2, 3)
    assert adapter.same(a, a) is True  # within one call
    assert adapter.same(a, b) is False  # equal values, two objects
    adapter.keep(a, [a, b])
    assert adapter.is_kept(a) is True  # across calls of one spec
    assert adapter.is_kept(np.arange(6.0).reshape(2, 3)) is False
    a[0, 0] = -1.0  # the grader's own write reaches the worker's object when a goes again
    assert adapter.first(a) == -1.0 and adapter.is_kept(a) is True
    conn.release()  # the end of a spec: the worker forgets what it was sent
    assert adapter.is_kept(a) is False


def test_the_worker_says_what_it_wrote_into_and_the_grader_s_array_stays(keeper: Any) -> None:
    conn, adapter = keeper
    w, v, never = np.zeros((3, 4)), np.ones(2), np.ones(2)
    adapter.keep(w, v)
    assert adapter.written_into([w, v, never]) == [None, None, None]
    adapter.scribble(7.0)
    where = adapter.written_into([w, v, never])
    assert where[0] == "argument 1 of call 1 of the spec, keep" and where[2] is None
    assert where[1] == "argument 2 of call 1 of the spec, keep"
    assert not w.any() and v.tolist() == [1.0, 1.0]  # nothing came back into them
    v[0] = 5.0  # the grader's own write, sent again: the worker's earlier write still counts
    assert adapter.first(v) == 5.0
    assert adapter.written_into([v]) == ["argument 2 of call 1 of the spec, keep"]
    conn.release()
    assert adapter.written_into([w]) == [None]  # a fresh spec: a fresh table


def test_lies_in_the_worker_s_answer_gain_nothing(keeper: Any) -> None:
    """A false "unwritten" is what a correct implementation says (the spec's expected
    values stay the grader's own); a false "written" fails only the liar's spec; a malformed
    answer (another length, huge numbers, strings) breaks the protocol, which fails the spec;
    and a reply that names an array by reference is refused (the grader reads none)."""
    conn, adapter = keeper
    w = np.zeros(3)
    adapter.keep(w)
    adapter.scribble(1.0)
    adapter.lie("unwritten")
    assert adapter.written_into([w]) == [None]
    assert not w.any()  # the grader's array: still its own values, whatever was said
    adapter.lie("written")
    assert adapter.written_into([w]) == ["argument 1 of call 1 of the spec, keep"]
    for forged in ("too_many", "huge", "strings"):
        conn.release()
        adapter.keep(w)
        adapter.lie(forged)
        with pytest.raises(WorkerLost, match="malformed answer to 'written'"):
            adapter.written_into([w])
    for token in (1, 10**40, -1):  # its own reply names an array by reference
        with pytest.raises(WorkerLost, match="array reference where none is expected"):
            adapter.answer_references(token)


def test_references_the_grader_never_sent_are_refused_in_the_worker() -> None:
    received, bufs = wire.Received(), [bytearray(np.arange(4.0).tobytes())]
    first = {"a": 0, "dtype": "<f8", "shape": [4], "r": 1}
    got = received.decode(first, bufs)
    assert received.decode({"r": 1}, []) is got
    for forged in ({"r": 2}, {"r": 10**40}, {"r": -1}, {"r": "1"}, {"r": 1.0}):
        with pytest.raises(wire.WireError, match=r"array reference|never sent"):
            received.decode(forged, [])
    with pytest.raises(wire.WireError, match="reference where none"):
        wire.decode({"r": 1}, [])  # the grader reads replies without a table
    with pytest.raises(wire.WireError, match="tokens"):
        received.written([1, "x"])


LIE = """
import sys as _sys

_wire = _sys.modules.get("wire")  # the worker's copy of the wire, beside the submission
if _wire is not None:
    _wire.Received.written = lambda self, tokens: [{answer}] * len(tokens)
"""


def _connect(folder: Path, source: str) -> tuple[Connection, RemoteAdapter, Path]:
    folder.mkdir()
    sub = folder / "submission.py"
    sub.write_text(source)
    target, iso, paths = plan(str(sub), packages=["numpy"], hide=[], limits=Limits(),
                              cwd=str(folder))  # fmt: skip
    grade_dir = Path(tempfile.mkdtemp(prefix="dl-ch2-ident-"))
    grade_dir.chmod(0o711)
    conn = Connection(target, iso, grade_dir, paths=paths)
    conn.deadline = time.monotonic() + 120
    return conn, RemoteAdapter(conn, conn.start(), target), grade_dir


@pytest.fixture
def spec_markers(pytestconfig: pytest.Config) -> None:
    """The suite's markers (its plugin's), so that a spec module can be imported here."""
    for line in ("section(id): a spec's section", "requires(cap): a spec's capability",
                 "erratum: a spec pinning an erratum"):  # fmt: skip
        pytestconfig.addinivalue_line("markers", line)


def _update_spec(folder: Path, source: str) -> str:
    """The update_weights spec run on ``source`` through its worker: "passed" or its message."""
    from conformance.harness import Impl
    from conformance.specs.test_s2_5_from_scratch import (
        test_update_weights_subtracts_lr_times_gradient_from_the_weights_given as spec,
    )

    conn, adapter, grade_dir = _connect(folder, source)
    try:
        spec(Impl(adapter, "submission.py", "float64", "cpu"))
        return "passed"
    except pytest.fail.Exception as exc:
        return str(exc).split("\n")[0]
    finally:
        conn.close()
        release_uids()
        shutil.rmtree(grade_dir, ignore_errors=True)


def test_a_lie_about_writes_scores_no_more_than_the_correct_code(
    tmp_path: Path, spec_markers: None
) -> None:
    """A worker's false "unwritten" makes a model that keeps the caller's arrays pass, as the
    correct code (which copies) passes: never more; it cannot make a wrong update pass (the
    expected values are the grader's own); a false "written" fails the liar's own spec."""
    base = CORRECT.read_text()
    copies = "self.weights = [np.array(w) for w in weights]"
    keeps = base.replace(copies, "self.weights = list(weights)")
    idle = base.replace("            w -= learning_rate * g", "            pass")
    assert keeps != base != idle
    unwritten, written = LIE.format(answer="False"), LIE.format(answer="True")
    assert _update_spec(tmp_path / "a", keeps + unwritten) == "passed"
    assert "weights[0] after update_weights" in _update_spec(tmp_path / "b", idle + unwritten)
    assert "wrote into weights[0]" in _update_spec(tmp_path / "c", base + written)


def test_a_model_that_keeps_the_caller_s_weight_arrays_fails_as_in_process(
    tmp_path: Path, spec_markers: None
) -> None:
    base = CORRECT.read_text()
    copies = "        self.weights = [np.array(w) for w in weights]"
    assert base.count(copies) == 1
    path = tmp_path / "keeps.py"
    path.write_text(base.replace(copies, "        self.weights = list(weights)"))
    assert "wrote into weights[0]" in _update_spec(tmp_path / "direct", path.read_text())
    report = tmp_path / "report.json"
    cmd = [sys.executable, "-m", "conformance", "grade", str(path), "--report-json", str(report)]
    spec = "test_update_weights_subtracts or test_update_touches_only"
    proc = subprocess.run([*cmd, "--", "-k", spec], capture_output=True, text=True, cwd=ROOT,
                          timeout=600)  # fmt: skip
    assert report.exists(), (proc.stdout + proc.stderr)[-3000:]
    got = {r["id"].split("::")[-1]: r["outcome"] for r in json.loads(report.read_text())["specs"]}
    assert got == {UPDATE_SPEC: "failed", "test_update_touches_only_the_model_trained": "failed"}
