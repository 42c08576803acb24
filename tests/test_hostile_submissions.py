"""Submissions written to forge their grade: each must score no more than a stub.

Each hostile submission is a stub (every verb raises NotImplementedError) plus an attack on
the grader: patching pytest or the suite, writing the report, reading the answers, importing
the reference, lying ndarray subclasses, killing the grader, daemons that outlive the grade,
editing the installed suite, a hang in C code that holds the GIL, reading a classmate's file.
They are graded as course staff would (``python -m conformance grade``, ``grade-all``); the
tests check the score, that the suite and the result files are unchanged, and what the
attack saw. As root (CI) the worker runs unprivileged in namespaces; not as root it runs with
the grader's rights, and only the attacks a process boundary stops are expected to fail.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
from worker_shared import shared_dir

ROOT = Path(__file__).resolve().parents[1]
SUITE = ROOT / "conformance"
STUDENT = SUITE / "examples" / "student_numpy.py"
ROOT_ONLY = pytest.mark.skipif(
    os.geteuid() != 0, reason="the unprivileged worker needs a grader running as root"
)

STUB = """
import numpy as np

VERBS = {verbs!r}
SHARED = {shared!r}
REPORT = {report!r}
SUITE = {suite!r}


def note(key, value):
    try:
        with open(SHARED + "/notes.jsonl", "a") as f:
            f.write(__import__("json").dumps([key, str(value)[:300]]) + "\\n")
    except OSError:
        pass


class Stub:
    name = "hostile"
    version = "1"
    devices = ("cpu",)
    dtypes = ("float64", "float32")
    capabilities = frozenset({{"naive_ops", "autodiff", "training", "momentum", "rmsprop",
                              "keras_init", "random_init", "input_checks", "single_sample"}})

    def __getattr__(self, verb):
        if verb in VERBS:
            def missing(*args, **kwargs):
                attack_in_verb()
                raise NotImplementedError(verb)
            return missing
        raise AttributeError(verb)


def attack_in_verb():
    pass
"""


def verbs() -> list[str]:
    from conformance.adapter import VERBS

    return sorted({v for vs in VERBS.values() for v in vs} - {"asarray", "to_numpy"})


def shared(tmp_path: Path) -> Path:
    """A folder the worker may write, for its notes (tmp_path's parents are root's own)."""
    folder = shared_dir("dl-ch2-hostile-")  # as root the worker sees no other folder
    # the probe's worker and the grade's may run as different uids: both must append
    (folder / "notes.jsonl").touch()
    (folder / "notes.jsonl").chmod(0o666)
    (tmp_path / "shared").symlink_to(folder)
    return folder


def hostile(tmp_path: Path, attack: str, *, asarray: str = "np.asarray") -> Path:
    """A stub submission with ``attack`` appended (it may redefine ``attack_in_verb``)."""
    notes = shared(tmp_path)
    head = STUB.format(
        verbs=verbs(),
        shared=str(notes),
        report=str(tmp_path / "report.json"),
        suite=str(SUITE),
    )
    conv = (
        "\nStub.asarray = staticmethod(lambda x, dtype=None: np.asarray(x, dtype=dtype))\n"
        f"Stub.to_numpy = staticmethod({asarray})\n"
    )
    path = tmp_path / "submission.py"
    path.write_text(head + conv + attack + "\nADAPTER = Stub()\n")
    return path


def suite_digest() -> str:
    h = hashlib.sha256()
    for p in sorted(SUITE.rglob("*")):
        if p.is_file() and "__pycache__" not in p.parts:
            h.update(str(p).encode() + b"\0" + p.read_bytes())
    return h.hexdigest()


def grade(tmp_path: Path, path: Path, *args: str) -> tuple[int, dict[str, Any], str]:
    report = tmp_path / "report.json"
    cmd = [sys.executable, "-m", "conformance", "grade", str(path), "--report-json", str(report)]
    cmd += ["--report-md", str(tmp_path / "card.md"), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600)
    data = json.loads(report.read_text()) if report.exists() else {}
    return proc.returncode, data, proc.stdout + proc.stderr


def notes(tmp_path: Path) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    log = tmp_path / "shared" / "notes.jsonl"
    if log.exists():
        for line in log.read_text().splitlines():
            key, value = json.loads(line)
            out.setdefault(key, []).append(value)
    return out


def assert_stub_score(rc: int, report: dict[str, Any], out: str) -> None:
    assert report, out[-3000:]
    assert report["totals"]["passed"] == 0, report["totals"]
    assert rc in (1, 3), out[-2000:]


@pytest.fixture
def untouched_suite() -> Any:
    before = suite_digest()
    yield
    assert suite_digest() == before, "a submission changed the installed suite"


def test_a_plain_stub_scores_zero(tmp_path: Path, untouched_suite: None) -> None:
    rc, report, out = grade(tmp_path, hostile(tmp_path, ""), "--", "-k", "s2_3")
    assert_stub_score(rc, report, out)
    assert report["complete"] is True


PATCH_THE_GRADER = """
for target in ("pytest", "_pytest.reports", "_pytest.runner", "numpy.testing",
               "conformance.harness", "conformance.plugin"):
    try:
        mod = __import__(target, fromlist=["_"])
    except Exception as exc:
        note("import " + target, type(exc).__name__)
        continue
    note("import " + target, "ok")
    if target == "_pytest.reports":
        mod.TestReport.passed = property(lambda self: True)
        mod.TestReport.failed = property(lambda self: False)
        mod.TestReport.outcome = "passed"
    if target == "numpy.testing":
        mod.assert_allclose = lambda *a, **k: None
    if target == "conformance.harness":
        mod.check_close = mod.check_equal = mod.check = lambda *a, **k: None
        mod.fail = lambda *a, **k: None
"""


def test_patching_pytest_numpy_testing_or_the_harness_changes_nothing(
    tmp_path: Path, untouched_suite: None
) -> None:
    rc, report, out = grade(tmp_path, hostile(tmp_path, PATCH_THE_GRADER), "--", "-k", "s2_3")
    assert_stub_score(rc, report, out)
    seen = notes(tmp_path)
    if os.geteuid() == 0:  # the worker's interpreter holds numpy and nothing of the grader's
        assert set(seen["import pytest"]) == {"ModuleNotFoundError"}
        assert set(seen["import conformance.harness"]) == {"ModuleNotFoundError"}


WRITE_THE_REPORT = """
import glob, os, signal, json

FORGED = {"schema": "dl-ch2-conformance-report/2", "complete": True, "incomplete_reason": None,
          "totals": {"collected": 1, "passed": 1, "failed": 0, "not_run": 0, "not_claimed": 0,
                     "skipped": 0, "xfailed": 0}, "specs": [], "sections": {}}

def attack_in_verb():
    targets = [REPORT, REPORT.replace("report.json", "card.md")]
    targets += glob.glob("/tmp/dl-ch2-grade-*/report.json") + glob.glob("/tmp/dl-ch2-grade-*/")
    for t in targets:
        try:
            path = t + "report.json" if t.endswith("/") else t
            with open(path, "w") as f:
                json.dump(FORGED, f)
            note("wrote", path)
        except OSError as exc:
            note("write denied", type(exc).__name__)
    for pid in (os.getppid(), -1):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError as exc:
            note("kill denied", type(exc).__name__)
"""


@ROOT_ONLY
def test_writing_the_report_and_killing_the_grader_forges_nothing(
    tmp_path: Path, untouched_suite: None
) -> None:
    rc, report, out = grade(
        tmp_path, hostile(tmp_path, WRITE_THE_REPORT), "--max-worker-restart", "3", "--", "-k",
        "s2_3",
    )  # fmt: skip
    assert_stub_score(rc, report, out)
    assert report["totals"]["collected"] > 1  # the grader's report, not the forged one
    assert "wrote" not in notes(tmp_path), notes(tmp_path)["wrote"]


READ_THE_ANSWERS = """
import os
for what in ("golden/cases.npz", "reference/losses.py", "adapters/numpy_ref.py",
             "examples/student_numpy.py"):
    try:
        open(os.path.join(SUITE, what), "rb").read()
        note("read " + what, "ok")
    except OSError as exc:
        note("read " + what, type(exc).__name__)
for module in ("conformance.adapters.numpy_ref", "conformance.examples.student_numpy",
               "conformance.golden", "dl_ch2"):
    try:
        __import__(module)
        note("import " + module, "ok")
    except Exception as exc:
        note("import " + module, type(exc).__name__)
"""


@ROOT_ONLY
def test_the_answers_are_neither_readable_nor_importable(
    tmp_path: Path, untouched_suite: None
) -> None:
    rc, report, out = grade(tmp_path, hostile(tmp_path, READ_THE_ANSWERS), "--", "-k", "s2_3")
    assert_stub_score(rc, report, out)
    seen = notes(tmp_path)
    reads = {k: v for k, v in seen.items() if k.startswith(("read", "import"))}
    assert len(reads) == 8, seen
    assert all("ok" not in v for v in reads.values()), reads


@pytest.mark.parametrize(
    "line",
    [
        "from conformance.adapters.numpy_ref import ADAPTER",
        "from conformance.examples.student_numpy import ADAPTER",
        "from conformance.adapters.torch_port import CPU as ADAPTER",
    ],
)
@ROOT_ONLY
def test_re_exporting_the_reference_or_the_example_cannot_load(
    tmp_path: Path, line: str, untouched_suite: None
) -> None:
    path = tmp_path / "adapter.py"
    path.write_text(line + "\n")
    rc, report, out = grade(tmp_path, path)
    assert rc == 2 and "No module named 'conformance'" in out, out[-2000:]
    assert report == {}


LIAR = '''
class Liar(np.ndarray):
    """Compares equal to anything, claims any shape and dtype asked about."""
    def __eq__(self, other):
        return True
    __ne__ = lambda self, other: False
    def __array_finalize__(self, obj):
        pass

def lie(x, dtype=None):
    return np.zeros((3,)).view(Liar)

for verb in VERBS:
    setattr(Stub, verb, staticmethod(lambda *a, **k: np.zeros((3,)).view(Liar)))
Stub.to_numpy = staticmethod(lie)
'''


def test_an_ndarray_subclass_that_lies_scores_no_more_than_honest_zeros(
    tmp_path: Path, untouched_suite: None
) -> None:
    honest = tmp_path / "honest"
    honest.mkdir()
    zeros = LIAR.replace(".view(Liar)", "")
    _, fair, _ = grade(honest, hostile(honest, zeros), "--", "-k", "s2_3 or s2_5")
    _, report, out = grade(tmp_path, hostile(tmp_path, LIAR), "--", "-k", "s2_3 or s2_5")
    assert report and fair, out[-2000:]
    assert report["totals"]["passed"] <= fair["totals"]["passed"] <= 3


DAEMON = """
import os, time

def daemon():
    if os.fork():
        return
    os.setsid()
    if os.fork():
        os._exit(0)
    time.sleep(4)  # the grade is over by now
    note("daemon alive", time.time())
    for target in (REPORT, REPORT.replace("report.json", "card.md")):
        try:
            open(target, "w").write("forged")
            note("daemon wrote", target)
        except OSError as exc:
            note("daemon denied", type(exc).__name__)
    os._exit(0)

daemon()
"""


def test_a_daemon_forked_by_the_submission_dies_with_its_grade(
    tmp_path: Path, untouched_suite: None
) -> None:
    rc, report, out = grade(tmp_path, hostile(tmp_path, DAEMON), "--", "-k", "vector_add")
    assert_stub_score(rc, report, out)
    before = (tmp_path / "report.json").read_bytes()
    time.sleep(6)
    assert "daemon alive" not in notes(tmp_path), notes(tmp_path)
    assert (tmp_path / "report.json").read_bytes() == before


EDIT_THE_SUITE = """
import os
for what in ("conftest.py", "harness.py", "golden/cases.npz", "plugin.py"):
    try:
        with open(os.path.join(SUITE, what), "ab") as f:
            f.write(b"\\n# forged\\n")
        note("edited " + what, "ok")
    except OSError as exc:
        note("edited " + what, type(exc).__name__)
"""


@ROOT_ONLY
def test_the_installed_suite_cannot_be_edited(tmp_path: Path, untouched_suite: None) -> None:
    rc, report, out = grade(tmp_path, hostile(tmp_path, EDIT_THE_SUITE), "--", "-k", "s2_3")
    assert_stub_score(rc, report, out)
    edits = {k: v for k, v in notes(tmp_path).items() if k.startswith("edited")}
    assert len(edits) == 4 and all("ok" not in v for v in edits.values()), edits


HANG_HOLDING_THE_GIL = """
import ctypes

def hang(*args, **kwargs):
    ctypes.PyDLL(None).sleep(3600)  # C code that never releases the GIL

Stub.relu = staticmethod(hang)
"""


def test_a_hang_in_c_code_holding_the_gil_costs_only_its_own_specs(
    tmp_path: Path, untouched_suite: None
) -> None:
    base = STUDENT.read_text()
    path = tmp_path / "adapter.py"
    path.write_text(base + HANG_HOLDING_THE_GIL.replace("Stub.relu", "StudentAdapter.relu"))
    t0 = time.monotonic()
    rc, report, out = grade(tmp_path, path, "--spec-timeout", "3", "--", "-k", "s2_3")
    elapsed = time.monotonic() - t0
    assert rc == 1 and report["complete"] is True, out[-3000:]
    hung = [r for r in report["specs"] if r["outcome"] == "failed"]
    assert hung and all("timed out" in r["message"] for r in hung)
    assert all("relu" in r["id"] or r["verb"] == "relu" for r in hung), [r["id"] for r in hung]
    assert report["totals"]["passed"] >= 50  # the rest of §2.3 still graded
    assert elapsed < 3 * len(hung) + 60


CLASSMATE = """
import glob
for path in [ALICE, *glob.glob("/tmp/dl-ch2-grade-*/scratch-*/*.py")]:
    try:
        code = open(path).read()
    except OSError as exc:
        note("denied", type(exc).__name__)
        continue
    if "alice" + "'s work" in code:  # her file, not one of this submission's own copies
        note("stole", path)
        exec(code)
        Stub = StudentAdapter  # noqa: F821
"""


@ROOT_ONLY
def test_grade_all_keeps_a_classmate_s_file_out_of_reach(tmp_path: Path) -> None:
    from conformance.grading.grade_all import grade_all
    from conformance.grading.rubric import load_rubric

    subs = tmp_path / "subs"
    subs.mkdir()
    (subs / "alice.py").write_text("# alice's work\n" + STUDENT.read_text())
    mallory = hostile(tmp_path, CLASSMATE.replace("ALICE", repr(str(subs / "alice.py"))))
    (subs / "mallory.py").write_text(mallory.read_text())
    rows = grade_all(subs, tmp_path / "out", load_rubric(None), jobs=2, progress=False)
    by = {r.submission: r for r in rows}
    assert by["alice.py"].score == by["alice.py"].max_score and by["alice.py"].status == "ok"
    assert by["mallory.py"].score == 0, by["mallory.py"]
    assert "stole" not in notes(tmp_path), notes(tmp_path)


MEMORISER = """
import hashlib

ANSWERS = {answers!r}

class Memoriser(StudentAdapter):
    name = "memoriser"
    def dot(self, x, y):
        raw = np.ascontiguousarray(x).tobytes() + np.ascontiguousarray(y).tobytes()
        key = hashlib.sha256(raw).hexdigest()
        if key in ANSWERS:  # a golden case recognised: the answer from memory
            return np.array(ANSWERS[key], dtype=x.dtype)
        return np.zeros(x.shape[:-1] + y.shape[:-2] + y.shape[-1:], dtype=x.dtype)

ADAPTER = Memoriser()
"""


def test_answers_memorised_from_the_golden_cases_fail_the_fresh_inputs(tmp_path: Path) -> None:
    import numpy as np

    from conformance.golden import load_case

    answers = {}
    dots = ("dot_matrix_matrix", "dot_matrix_vector", "dot_rank4_matrix", "dot_rank4_vector")
    for name in (*dots, "dot_square", "dot_vector"):
        c = load_case(name)
        for dtype in ("float64", "float32"):
            x, y = (np.ascontiguousarray(c[k].astype(dtype)) for k in ("x", "y"))
            key = hashlib.sha256(x.tobytes() + y.tobytes()).hexdigest()
            answers[key] = np.dot(x, y).tolist()
    path = tmp_path / "adapter.py"
    path.write_text(STUDENT.read_text() + MEMORISER.format(answers=answers))
    rc, report, out = grade(tmp_path, path, "--", "-k", "dot_golden or fresh_inputs")
    outcomes = {r["id"].split("::")[-1]: r["outcome"] for r in report["specs"]}
    memorised = [k for k in outcomes if k.startswith("test_dot_golden")]
    assert memorised and all(outcomes[k] == "passed" for k in memorised), outcomes
    assert outcomes["test_fresh_inputs[dot]"] == "failed", out[-2000:]
    assert rc == 1


@ROOT_ONLY
def test_a_grader_that_is_not_root_still_keeps_the_submission_in_its_own_process(
    tmp_path: Path,
) -> None:
    """The TA's-laptop path, for real: the whole grader runs as nobody (from copies of the
    suite and its libraries), so the worker runs with the grader's own rights."""
    import shutil

    from conformance.grading.sandbox import worker_python, worker_site

    site = worker_site(["numpy", "pytest", "hypothesis", "pytest-timeout"])
    home = Path(tempfile.mkdtemp(prefix="dl-ch2-nonroot-"))
    shutil.copytree(SUITE, home / "conformance", ignore=shutil.ignore_patterns("__pycache__"))
    sub = home / "submission.py"
    sub.write_text(hostile(tmp_path, PATCH_THE_GRADER + DAEMON).read_text())
    for d, _dirs, files in os.walk(home):
        os.chmod(d, 0o777)
        for f in files:
            os.chmod(os.path.join(d, f), 0o666)
    code = (
        "import sys; from conformance.__main__ import main; "
        f"sys.exit(main(['grade', {str(sub)!r}, '--report-json', {str(home / 'r.json')!r}, "
        "'--', '-k', 'vector_add']))"
    )
    cmd = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    cmd += [worker_python(), "-S", "-c", code]
    env = {"PATH": "/usr/bin:/bin", "HOME": str(home), "PYTHONPATH": f"{home}:{site}"}
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=home, timeout=300, env=env)
    report = json.loads((home / "r.json").read_text()) if (home / "r.json").exists() else {}
    assert_stub_score(proc.returncode, report, proc.stdout + proc.stderr)
    assert "NOT ISOLATED" in report.get("isolation", {}).get("level", ""), proc.stdout[-3000:]
    assert "grade as root in a container" in report["isolation"]["level"]
    before = (home / "r.json").read_bytes()
    time.sleep(6)
    assert "daemon alive" not in notes(tmp_path), notes(tmp_path)  # the subreaper ended it
    assert (home / "r.json").read_bytes() == before
    shutil.rmtree(home, ignore_errors=True)


SECRET = """
import os
note("secret", os.environ.get("DL_CH2_GRADE_SECRET"))
"""


@pytest.mark.parametrize("level", ["default", "process"])
def test_the_grade_s_secret_seed_never_reaches_the_worker(tmp_path: Path, level: str) -> None:
    path = hostile(tmp_path, SECRET)
    env = {**os.environ, "DL_CH2_ISOLATION": level}
    report = tmp_path / "report.json"
    cmd = [sys.executable, "-m", "conformance", "grade", str(path), "--report-json", str(report)]
    proc = subprocess.run(
        [*cmd, "--", "-k", "fresh_inputs"], capture_output=True, text=True, cwd=ROOT, env=env
    )
    assert report.exists(), proc.stdout[-2000:] + proc.stderr[-2000:]
    assert set(notes(tmp_path)["secret"]) == {"None"}


EARLIER_BATCH = """
import os
for path in [ALICE, GRADEBOOK, REPORT_1]:
    try:
        code = open(path).read()
    except OSError as exc:
        note("denied", type(exc).__name__)
        continue
    note("read", path)
    if "alice" + "'s work" in code:
        exec(code)
        Stub = StudentAdapter  # noqa: F821
for folder in ("/", "/tmp", "/work", "/home", "/root", FIRST):
    try:
        note("ls " + folder, sorted(os.listdir(folder)))
    except OSError as exc:
        note("ls " + folder, type(exc).__name__)
"""


@ROOT_ONLY
def test_a_second_batch_cannot_read_the_first(tmp_path: Path) -> None:
    """Issue 29: a batch sees only itself, whatever the modes of another batch's folders."""
    from conformance.grading.grade_all import grade_all
    from conformance.grading.rubric import parse_rubric

    rubric = parse_rubric("[assignment]\ncovers = []\n")
    first = Path(tempfile.mkdtemp(prefix="dl-ch2-batch-1-"))
    first.chmod(0o755)  # as a TA's folders often are: readable by anyone
    (first / "subs").mkdir(mode=0o755)
    (first / "subs" / "alice.py").write_text("# alice's work\n" + STUDENT.read_text())
    grade_all(first / "subs", first / "out", rubric, jobs=1, progress=False)
    alice = first / "subs" / "alice.py"
    report_1 = first / "out" / "submissions" / "alice.py" / "report.json"
    attack = EARLIER_BATCH.replace("ALICE", repr(str(alice))).replace("FIRST", repr(str(first)))
    attack = attack.replace("GRADEBOOK", repr(str(first / "out" / "gradebook.csv")))
    attack = attack.replace("REPORT_1", repr(str(report_1)))
    subs = tmp_path / "subs"
    subs.mkdir()
    (subs / "mallory.py").write_text(hostile(tmp_path, attack).read_text())
    rows = grade_all(subs, tmp_path / "out", rubric, jobs=1, progress=False)
    seen = notes(tmp_path)
    import shutil

    shutil.rmtree(first, ignore_errors=True)
    assert rows[0].score == 0, rows[0]
    assert "read" not in seen and len(seen["denied"]) >= 3, seen
    assert all(v.startswith("[") for v in seen["ls /"]), seen  # it did list its view
    listed = " ".join(v for k, vs in seen.items() if k.startswith("ls") for v in vs)
    assert "alice" not in listed and "dl-ch2-batch-1" not in listed, seen
