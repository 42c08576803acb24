"""Grading a folder of submissions: gradebook, summary, resumption, bad submissions (issue 13)."""

from __future__ import annotations

import csv
import json
import shutil
import signal
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import pytest
from worker_shared import shared_dir

from conformance.grading.grade_all import (
    Row,
    discover,
    grade_all,
    gradebook_csv,
    submission_key,
    summary_markdown,
)
from conformance.grading.rubric import load_rubric, parse_rubric

ROOT = Path(__file__).resolve().parent.parent
STUDENT = ROOT / "conformance" / "examples" / "student_numpy.py"


def test_discover_lists_py_files_and_folders_only(tmp_path: Path) -> None:
    for name in ("b.py", "a.py", "notes.txt", ".hidden.py", "_private.py"):
        (tmp_path / name).write_text("")
    (tmp_path / "carol").mkdir()
    (tmp_path / "__pycache__").mkdir()
    assert [p.name for p in discover(tmp_path)] == ["a.py", "b.py", "carol"]
    with pytest.raises(ValueError, match="does not exist"):
        discover(tmp_path / "missing")


def test_submission_key_tracks_content_suite_and_rubric(tmp_path: Path) -> None:
    sub = tmp_path / "dave"
    sub.mkdir()
    (sub / "adapter.py").write_text("ADAPTER = 1\n")
    rubric = load_rubric()
    key = submission_key(sub, "suite-1", rubric)
    (sub / "__pycache__").mkdir()
    (sub / "__pycache__" / "adapter.cpython-311.pyc").write_bytes(b"\0")
    assert submission_key(sub, "suite-1", rubric) == key  # bytecode is not content
    assert submission_key(sub, "suite-2", rubric) != key
    assert submission_key(sub, "suite-1", parse_rubric("[points]\ndefault = 2")) != key
    (sub / "helper.py").write_text("\n")
    assert submission_key(sub, "suite-1", rubric) != key


def test_gradebook_and_summary_from_rows() -> None:
    rows = [
        Row("ann", 10.0, 10.0, {"2.3": 6.0, "2.5": 4.0}),
        Row("ben", 5.0, 10.0, {"2.3": 5.0}),
        Row("cat", 0.0, 10.0, {}, "incomplete", "budget ran out"),
        Row("dan", 0.0, None, {}, "error", "importing adapter.py raised NameError: x"),
    ]
    table = list(csv.reader(gradebook_csv(rows).splitlines()))
    head = ["submission", "score", "max_score", "§2.3", "§2.5", "status", "reason", "graded"]
    assert table[0] == head
    assert table[1] == ["ann", "10", "10", "6", "4", "ok", "", "new"]
    assert table[2] == ["ben", "5", "10", "5", "0", "ok", "", "new"]
    dan = ["dan", "0", "", "", "", "error", "importing adapter.py raised NameError: x", "new"]
    assert table[4] == dan
    md = summary_markdown(rows, "histogram.png")
    assert "4 submission(s): 2 ok, 1 incomplete, 1 error." in md
    assert "mean 50.0, median 50.0, min 0.0, max 100.0" in md  # of 100, 50, 0
    assert "| [0, 10) | 1 |" in md and "| [50, 60) | 1 |" in md and "| [90, 100] | 1 |" in md
    assert "- `dan`: error: importing adapter.py raised NameError: x" in md
    assert "![score distribution](histogram.png)" in md


def _count(report: dict[str, object], outcome: str) -> int:
    specs = report["specs"]
    assert isinstance(specs, list)
    return sum(1 for s in specs if s["outcome"] == outcome)


@pytest.mark.slow
def test_grade_all_a_folder_with_good_and_bad_submissions_then_resume(tmp_path: Path) -> None:
    subs, out = tmp_path / "subs", tmp_path / "out"
    (subs / "alice").mkdir(parents=True)
    shutil.copy(STUDENT, subs / "alice" / "my_impl.py")  # found as the single ADAPTER file
    (subs / "broken.py").write_text("ADAPTER = undefined_name\n")
    (subs / "noadapter").mkdir()
    (subs / "noadapter" / "main.py").write_text("print('hello')\n")
    graded: list[str] = []
    rows = grade_all(
        subs,
        out,
        load_rubric(),
        jobs=2,
        progress=False,
        on_row=lambda r: graded.append(r.submission),
    )
    assert sorted(graded) == ["alice", "broken.py", "noadapter"]
    by = {r.submission: r for r in rows}
    report = json.loads((out / "submissions" / "alice" / "report.json").read_text())
    passed = _count(report, "passed")
    assert passed > 90
    assert by["alice"].status == "ok"
    # the default course rubric: 100 points by objective, all earned
    assert by["alice"].score == by["alice"].max_score == 100
    assert by["broken.py"].status == "error" and "NameError" in by["broken.py"].reason
    assert by["noadapter"].status == "error" and "no adapter.py" in by["noadapter"].reason

    table = list(csv.DictReader((out / "gradebook.csv").read_text().splitlines()))
    assert [t["submission"] for t in table] == ["alice", "broken.py", "noadapter"]
    assert float(table[0]["score"]) == 100 and table[0]["status"] == "ok"
    assert sum(float(v) for k, v in table[0].items() if k.startswith("§") and v) == 100
    assert "3 submission(s): 1 ok, 0 incomplete, 2 error." in (out / "summary.md").read_text()
    assert (out / "histogram.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "submissions" / "alice" / "card.md").exists()

    # a re-run reuses the complete grade and grades the errored ones again (issue 29)
    graded.clear()
    again = grade_all(
        subs,
        out,
        load_rubric(),
        jobs=2,
        progress=False,
        on_row=lambda r: graded.append(r.submission),
    )
    assert sorted(graded) == ["broken.py", "noadapter"]
    assert [r.graded for r in again] == ["reused", "regraded: was error", "regraded: was error"]
    assert [(r.submission, r.score, r.status) for r in again] == [
        (r.submission, r.score, r.status) for r in rows
    ]
    (subs / "alice" / "my_impl.py").write_text(STUDENT.read_text() + "\n# edited\n")
    graded.clear()
    grade_all(
        subs,
        out,
        load_rubric(),
        jobs=2,
        progress=False,
        on_row=lambda r: graded.append(r.submission),
    )
    assert sorted(graded) == ["alice", "broken.py", "noadapter"]  # an edit regrades it


def test_a_hanging_submission_gets_an_error_row_and_the_batch_goes_on(tmp_path: Path) -> None:
    subs, out = tmp_path / "subs", tmp_path / "out"
    subs.mkdir()
    (subs / "hangs.py").write_text("import time\ntime.sleep(600)\nADAPTER = None\n")
    (subs / "empty").mkdir()
    rows = grade_all(subs, out, load_rubric(), jobs=2, progress=False, hard_timeout_s=4)
    by = {r.submission: r for r in rows}
    assert by["hangs.py"].status == "error" and "hung" in by["hangs.py"].reason
    assert by["empty"].status == "error"
    assert "hangs.py" in (out / "gradebook.csv").read_text()


def test_grade_all_rejects_bad_jobs(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="jobs must be >= 1"):
        grade_all(tmp_path, tmp_path / "out", load_rubric(), jobs=0, progress=False)


def test_cli_grade_all_on_a_missing_folder_is_a_one_line_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from dl_ch2_tools.cli import main

    code = main(["grade-all", str(tmp_path / "absent"), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and "does not exist" in err


def test_cli_bad_rubric_is_a_one_line_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from conformance.__main__ import main

    rubric = tmp_path / "r.toml"
    rubric.write_text('[visibility]\ndefault = "secret"\n')
    code = main(["gradescope-bundle", "--rubric", str(rubric), "-o", str(tmp_path / "a.zip")])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and "visibility.default" in err
    assert not (tmp_path / "a.zip").exists()


def test_every_entry_gets_a_row_even_those_that_cannot_be_graded(tmp_path: Path) -> None:
    subs = tmp_path / "subs"
    subs.mkdir()
    (subs / "notes.txt").write_text("not a submission")
    (subs / "link.py").symlink_to(STUDENT)  # a link out of the folder: never followed
    with open(subs / "huge.py", "wb") as f:  # sparse: 60 MB that cost no disk
        f.truncate(60 * 2**20)
    bad_name = b"caf\xe9.py".decode("utf-8", "surrogateescape")  # a Latin-1 name
    (subs / bad_name).write_text("ADAPTER = None\n")
    rows = grade_all(subs, tmp_path / "out", load_rubric(), jobs=1, progress=False)
    by = {r.submission: r for r in rows}
    assert set(by) == {"notes.txt", "link.py", "huge.py", "caf\\xe9.py"}, set(by)
    assert "not a .py file" in by["notes.txt"].reason
    assert "symbolic link" in by["link.py"].reason
    assert "over the" in by["huge.py"].reason
    assert by["caf\\xe9.py"].status == "error"  # graded: its ADAPTER is None
    assert all(r.score == 0 for r in rows)
    table = list(csv.reader((tmp_path / "out" / "gradebook.csv").read_text().splitlines()))
    assert [row[0] for row in table[1:]] == [r.submission for r in rows]


def test_hashing_a_submission_streams_it(tmp_path: Path) -> None:
    big = tmp_path / "big.py"
    with open(big, "wb") as f:
        f.truncate(200 * 2**20)
    tracemalloc.start()
    submission_key(big, "suite", load_rubric())
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 8 * 2**20, f"hashing 200 MiB held {peak / 2**20:.1f} MiB at once"


@pytest.mark.parametrize(("sig", "code"), [("SIGINT", 130), ("SIGTERM", 143)])
def test_stopping_the_batch_writes_the_gradebook_of_what_finished(
    tmp_path: Path, sig: str, code: int
) -> None:
    flag = shared_dir("dl-ch2-stop-")  # a folder the worker may write
    subs = tmp_path / "subs"
    subs.mkdir()
    (subs / "a_good.py").write_text(STUDENT.read_text())
    hang = (
        STUDENT.read_text()
        + f"\nimport os, time\nopen(os.path.join({str(flag)!r}, 'started'), 'w').close()\n"
        "time.sleep(3600)\n"
    )
    for name in ("b_hangs.py", "c_waits.py", "d_waits.py"):
        (subs / name).write_text(hang)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "conformance", "grade-all", str(subs), "--out", str(out)]
    proc = subprocess.Popen(
        [*cmd, "--jobs", "1", "--no-progress"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL) and None,
    )
    deadline = time.monotonic() + 120
    while not (flag / "started").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert (flag / "started").exists(), "the hanging submission never started"
    proc.send_signal(getattr(signal, sig))
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == code, output.decode()[-2000:]
    assert b"stopped by" in output
    table = csv.DictReader((out / "gradebook.csv").read_text().splitlines())
    rows = {row["submission"]: row for row in table}
    assert set(rows) == {"a_good.py", "b_hangs.py", "c_waits.py", "d_waits.py"}
    assert rows["a_good.py"]["status"] == "ok"
    assert "not graded" in rows["c_waits.py"]["reason"]
    assert "not graded" in rows["d_waits.py"]["reason"]
    assert rows["b_hangs.py"]["status"] in ("incomplete", "error")
    time.sleep(1)
    leftover = subprocess.run(["pgrep", "-f", str(subs)], capture_output=True, text=True)
    assert leftover.stdout.strip() == "", "a grade outlived the stopped batch"
