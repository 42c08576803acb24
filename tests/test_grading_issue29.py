"""Issue 29: what a grader meets as a shell user and course staff would (the cheap checks).

Verbs an adapter provides through ``__getattr__`` are found; a hang at import names its
limit; options either apply or are refused, naming themselves; the gradebook of a resumed
batch re-grades what did not finish.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from worker_shared import shared_dir, worker_connection

from conformance.adapter import AdapterLoadError
from conformance.grading.client import Connection, RemoteAdapter
from conformance.grading.sandbox import release_uids

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
    conn, target = worker_connection(tmp_path, source, "dl-ch2-i29-", timeout)
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


def _batch_cmd(subs: Path | str, out: Path | str) -> list[str]:
    cmd = [sys.executable, "-m", "conformance", "grade-all", str(subs), "--out", str(out)]
    return [*cmd, "--rubric", "core.toml", "--jobs", "1", "--no-progress", "--hard-timeout", "300"]


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
    out = base / "out"  # relative paths, as a shell user writes them (issue 29, item 3)
    proc = subprocess.run(_batch_cmd("subs", "out"), capture_output=True, text=True, timeout=300,
                          cwd=base)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    assert proc.stderr.strip() == "", proc.stderr  # --no-progress: no bar
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
    proc = subprocess.Popen(_batch_cmd(subs, out), stdout=subprocess.PIPE, cwd=subs.parent,
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
    resumed = subprocess.run(_batch_cmd(subs, out), capture_output=True, text=True, timeout=300,
                             cwd=subs.parent)  # fmt: skip
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr[-3000:]
    assert _table(out) == expected
    graded = {r[0]: r[-1] for r in csv.reader((out / "gradebook.csv").read_text().splitlines())}
    assert graded["a.py"] == "reused" and graded["b.py"].startswith("regraded: was "), graded


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


# --- item 4: every option means something in every mode -----------------------------------

#: How the test below shows each option of ``grade`` applied (the card names its value).
GRADE_OPTIONS = {
    "adapter": "the graded implementation's name on the card",
    "dtype": "dtype float32 on the card",
    "report_json": "the report written there",
    "report_md": "the card written there",
    "jobs": "-n 1 (pytest-xdist's own -n is refused as a pytest argument)",
    "spec_timeout": "spec timeout 7 s",
    "budget": "budget 100 s",
    "max_worker_restart": "worker restarts 4",
    "allow": "libraries numpy, packaging",
    "hide": "hidden <path>",
    "memory_limit": "memory 3 GiB",
    "pytest_args": "plain mode: -k narrows the grade; course mode: refused, exit 2",
    "gradescope": "results.json written, its output is the card",
    "rubric": "the rubric's score printed, its budget used",
}
GRADE_ALL_OPTIONS = {
    "submissions": "the folder graded",
    "out": "the output folder (relative to the current folder)",
    "rubric": "rubric core.toml in summary.md",
    "jobs": "1 submission(s) at once (--jobs)",
    "hard_timeout": "hard timeout 300 s",
    "no_progress": "no progress bar on stderr",
}


def _dests(command: str) -> set[str]:
    from dl_ch2_tools.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    parser = sub.choices[command]  # type: ignore[index]
    return {a.dest for a in parser._actions if a.dest not in ("help", "func", "classroom_func")}


def test_the_option_tables_cover_every_option_of_grade_and_grade_all() -> None:
    assert _dests("grade") == set(GRADE_OPTIONS)
    assert _dests("grade-all") == set(GRADE_ALL_OPTIONS)


def _card_options(tmp_path: Path) -> list[str]:
    hidden = tmp_path / "hidden"
    hidden.mkdir()
    return ["--dtype", "float32", "--report-json", "r.json", "--report-md", "card.md", "-n", "1",
            "--spec-timeout", "7", "--budget", "100", "--max-worker-restart", "4",
            "--allow", "packaging", "--hide", "hidden", "--memory-limit", "3"]  # fmt: skip


def _assert_card_shows_options(tmp_path: Path, card: str, report: dict[str, object]) -> None:
    want = ["dtype float32", "budget 100 s", "spec timeout 7 s", "worker restarts 4",
            "memory 3 GiB", "libraries numpy, packaging", str(tmp_path / "hidden")]  # fmt: skip
    assert all(w in card for w in want), [w for w in want if w not in card]
    assert "student-numpy" in card and report["dtype"] == "float32"


def _dl_ch2(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "conformance", *args]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=300)


def test_every_grade_option_applies_in_plain_mode(tmp_path: Path) -> None:
    (tmp_path / "adapter.py").write_text(STUDENT.read_text())
    proc = _dl_ch2(tmp_path, "grade", "adapter.py", *_card_options(tmp_path), "--", "-k",
                   "vector_add")  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    report = json.loads((tmp_path / "r.json").read_text())
    _assert_card_shows_options(tmp_path, (tmp_path / "card.md").read_text(), report)
    assert report["totals"]["passed"] == 2  # -k applied


def test_every_grade_option_applies_in_course_mode_or_is_refused(tmp_path: Path) -> None:
    (tmp_path / "adapter.py").write_text(STUDENT.read_text())
    (tmp_path / "core.toml").write_text(CORE + "[grading]\nbudget = 240\n")
    course = ["--rubric", "core.toml", "--gradescope", "results.json"]
    refused = _dl_ch2(tmp_path, "grade", "adapter.py", *course, "--", "-k", "vector_add")
    assert refused.returncode == 2 and "pytest arguments ['-k', 'vector_add']" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    proc = _dl_ch2(tmp_path, "grade", "adapter.py", *course, *_card_options(tmp_path))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    results = json.loads((tmp_path / "results.json").read_text())
    report = json.loads((tmp_path / "r.json").read_text())
    _assert_card_shows_options(tmp_path, results["output"], report)
    score = re.findall(r"rubric score: (\S+) / (\S+) \(results.json: results.json\)", proc.stdout)
    assert score and score[0][0] == score[0][1] == f"{results['score']:g}", proc.stdout[-500:]


def test_grade_with_a_rubric_alone_prints_its_score_and_uses_its_budget(tmp_path: Path) -> None:
    (tmp_path / "core.toml").write_text(CORE + "[grading]\nbudget = 240\n")
    broken = tmp_path / "adapter.py"
    broken.write_text(STUDENT.read_text().replace("return np.maximum(x, 0)", "return x"))
    proc = _dl_ch2(tmp_path, "grade", "adapter.py", "--rubric", "core.toml", "--report-md", "c.md")
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    score = re.findall(r"rubric score: (\S+) / (\S+)", proc.stdout)
    # one point a core spec (the rubric names no objective): about a hundred, less for relu
    assert score and float(score[0][0]) < float(score[0][1]) >= 100, proc.stdout[-1000:]
    assert "budget 240 s" in (tmp_path / "c.md").read_text()


def test_grade_all_refuses_an_option_it_does_not_know(tmp_path: Path) -> None:
    (tmp_path / "subs").mkdir()
    cmd = [sys.executable, "-m", "conformance", "grade-all", "subs", "--out", "o", "--budget", "5"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert proc.returncode == 2 and "--budget" in proc.stderr, proc.stderr
    assert not (tmp_path / "o").exists()


def test_grade_all_with_relative_paths_shows_its_options_and_keeps_its_outputs_private(
    batch: tuple[Path, Path, dict[str, list[str]]],
) -> None:
    _subs, out, table = batch
    assert float(table["a.py"][1]) == float(table["a.py"][2]) > 0  # graded, in the right place
    summary = (out / "summary.md").read_text()
    for shown in ("1 submission(s) at once (--jobs)", "hard timeout 300 s", "rubric core.toml"):
        assert shown in summary, summary
    for path in [out, *out.rglob("*")]:
        mode = path.stat().st_mode & 0o777
        assert mode & 0o077 == 0 or path.parent.stat().st_mode & 0o077 == 0, (path, oct(mode))
    assert (out.stat().st_mode & 0o777) == 0o700
    assert (out / "submissions").stat().st_mode & 0o777 == 0o700


def test_grade_all_exits_1_when_a_submission_errors_and_a_rerun_grades_it_again(
    tmp_path: Path,
) -> None:
    (tmp_path / "subs").mkdir()
    (tmp_path / "core.toml").write_text(CORE)
    (tmp_path / "subs" / "broken.py").write_text("ADAPTER = undefined_name\n")
    for graded in ("new", "regraded: was error"):
        proc = subprocess.run(_batch_cmd("subs", "grades"), capture_output=True, text=True,
                              cwd=tmp_path, timeout=120)  # fmt: skip
        assert proc.returncode == 1, proc.stdout + proc.stderr
        rows = list(csv.DictReader((tmp_path / "grades" / "gradebook.csv").open()))
        assert rows[0]["status"] == "error" and "NameError" in rows[0]["reason"], rows
        assert rows[0]["graded"] == graded


# --- item 5: memory is memory ------------------------------------------------------------

SHARED_MEMORY = """
import mmap, os

def _touch_shared(x):
    held = mmap.mmap(-1, 2 * 2**30, flags=mmap.MAP_SHARED | mmap.MAP_ANONYMOUS)
    _KEEP.append(held)
    for mib in range(0, 2048, 64):
        for offset in range(mib * 2**20, (mib + 64) * 2**20, 4096):
            held[offset] = 1
        # atomically: the cap may kill the worker between a file's truncation and its write
        with open(os.path.join(FLAGS, "touched.tmp"), "w") as f:
            f.write(str(mib + 64))
        os.replace(os.path.join(FLAGS, "touched.tmp"), os.path.join(FLAGS, "touched"))
    __import__("time").sleep(3)  # held, as a program holds what it uses
    return np.maximum(x, 0)

_KEEP = []
StudentAdapter.relu = staticmethod(_touch_shared)
"""


@pytest.mark.parametrize("mechanism", ["default", "watchdog"])
def test_two_gib_of_shared_memory_under_a_one_gib_cap_is_stopped(
    tmp_path: Path, mechanism: str
) -> None:
    flags = shared_dir("dl-ch2-i29-shm-")
    (tmp_path / "adapter.py").write_text(
        f"FLAGS = {str(flags)!r}\n" + STUDENT.read_text() + SHARED_MEMORY
    )
    env = dict(os.environ)
    if mechanism == "watchdog":
        env["DL_CH2_MEMORY_CAP"] = "watchdog"
    cmd = [sys.executable, "-m", "conformance", "grade", "adapter.py", "--memory-limit", "1"]
    cmd += ["--report-json", "r.json", "--", "-k", "test_relu_of_zero"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=300, env=env)
    report = json.loads((tmp_path / "r.json").read_text())
    failed = [s for s in report["specs"] if s["outcome"] == "failed"]
    assert proc.returncode == 1 and len(failed) == 1, proc.stdout[-3000:]
    message = failed[0]["message"]
    assert "stopped by its memory cap of 1 GiB" in message, message
    held = report["isolation"]["memory_cap"]["mechanism"]
    assert ("watchdog" in held) == (mechanism == "watchdog"), held
    assert held.split(":")[0] in message  # the report says which mechanism held
    touched = int((flags / "touched").read_text())
    if mechanism == "default" and "cgroup" in held:  # exact: the touch itself is stopped
        assert touched < 2048, f"the worker touched {touched} MiB of shared memory"
