"""A notebook and a folder submission grade exactly as the same code in one file.

The worked student example is split three ways: one .py file; a folder whose adapter imports
its own helper module; a notebook whose cells hold the code, plus IPython lines (a magic, a
shell line, a cell magic) that are dropped with a note. Graded with the same command, every
spec has the same outcome. The folder also goes through Gradescope's ``run_autograder``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

nbformat = pytest.importorskip("nbformat")

ROOT = Path(__file__).resolve().parents[1]
STUDENT = (ROOT / "conformance" / "examples" / "student_numpy.py").read_text()
SPLIT = "class StudentAdapter:"
SELECT = ["--", "-k", "s2_3 or s2_5"]


def grade(tmp_path: Path, target: Path) -> dict[str, Any]:
    report = tmp_path / f"{target.name}.json"
    cmd = [sys.executable, "-m", "conformance", "grade", str(target), "--report-json", str(report)]
    proc = subprocess.run([*cmd, *SELECT], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(report.read_text())


def outcomes(report: dict[str, Any]) -> dict[str, str]:
    return {r["id"]: r["outcome"] for r in report["specs"]}


def as_folder(folder: Path) -> Path:
    helpers, adapter = STUDENT.split(SPLIT)
    folder.mkdir()
    (folder / "chapter2_helpers.py").write_text(helpers)
    (folder / "adapter.py").write_text(
        "import numpy as np\nfrom chapter2_helpers import *  # the student's own module\n"
        "from chapter2_helpers import ACTS, EPS, Model, need, loss, loss_grad, relu, softmax\n\n"
        + SPLIT
        + adapter
    )
    return folder


def as_notebook(path: Path) -> Path:
    helpers, adapter = STUDENT.split(SPLIT)
    cells = [
        nbformat.v4.new_markdown_cell("# Chapter 2, from scratch"),
        nbformat.v4.new_code_cell("%matplotlib inline\n!pip install numpy\n" + helpers),
        nbformat.v4.new_code_cell("%%time\nprint('a cell magic: dropped whole')"),
        nbformat.v4.new_code_cell(SPLIT + adapter),
    ]
    nbformat.write(nbformat.v4.new_notebook(cells=cells), str(path))
    return path


def test_a_folder_and_a_notebook_grade_as_the_same_code_in_one_file(tmp_path: Path) -> None:
    single = tmp_path / "adapter.py"
    single.write_text(STUDENT)
    one = grade(tmp_path, single)
    folder = grade(tmp_path, as_folder(tmp_path / "alice"))
    notebook = grade(tmp_path, as_notebook(tmp_path / "bob.ipynb"))
    assert one["totals"]["passed"] > 100
    assert outcomes(folder) == outcomes(one)
    assert outcomes(notebook) == outcomes(one)
    notes = " ".join(notebook["warnings"])
    assert "%matplotlib inline" in notes and "!pip install numpy" in notes and "%%time" in notes


def test_gradescope_grades_a_folder_submission_like_a_single_file(tmp_path: Path) -> None:
    from conformance.grading.gradescope import run_autograder

    scores = []
    for name, make in (("file", None), ("folder", as_folder)):
        root = tmp_path / name
        (root / "source").mkdir(parents=True)
        (root / "source" / "rubric.toml").write_text("[grading]\nbudget = 300\n")
        if make is None:
            (root / "submission").mkdir()
            (root / "submission" / "adapter.py").write_text(STUDENT)
        else:
            make(root / "submission")
        assert run_autograder(root, root / "source" / "rubric.toml") == 0
        results = json.loads((root / "results" / "results.json").read_text())
        scores.append((results["score"], [t["status"] for t in results["tests"]]))
        if os.geteuid() == 0:
            assert "isolation: unprivileged" in results["output"]
    assert scores[0] == scores[1] and scores[0][0] > 0
