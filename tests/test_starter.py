"""The student starter: every verb of the assignment, documented, not implemented (issue 22)."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import nbformat
import pytest

from conformance.adapter import VERBS
from conformance.grading.gradescope import run_grade
from conformance.grading.rubric import load_rubric, parse_rubric, score_report
from conformance.grading.starter import write_starter

ROOT = Path(__file__).resolve().parent.parent
CHAPTER_VERBS = {
    v
    for cap in ("core", "naive_ops", "autodiff", "training", "momentum", "rmsprop", "keras_init")
    for v in VERBS[cap]
}


def load(source: str) -> ModuleType:
    module = ModuleType("starter")
    exec(compile(source, "starter.py", "exec"), module.__dict__)  # our own generated file
    return module


def verbs_of(adapter: Any) -> set[str]:
    known = {v for verbs in VERBS.values() for v in verbs}
    return {name for name in dir(adapter) if name in known}


def test_the_py_starter_has_every_verb_of_the_chapter_each_raising(tmp_path: Path) -> None:
    path = write_starter(load_rubric(), tmp_path / "adapter.py", template="adapter")
    module = load(path.read_text())
    adapter = module.ADAPTER
    assert verbs_of(adapter) == CHAPTER_VERBS
    assert "train_first_example" not in path.read_text()  # mnist_training is not covered
    assert set(adapter.capabilities) == set(load_rubric().covers)
    for verb in CHAPTER_VERBS:
        fn = getattr(adapter, verb)
        params = inspect.signature(fn).parameters
        args = [None] * sum(1 for p in params.values() if p.default is p.empty)
        with pytest.raises(NotImplementedError):
            fn(*args)
        assert fn.__doc__ and fn.__doc__.strip(), verb
    assert "Element-wise ``x + y`` with broadcasting." in module.add.__doc__


def test_a_narrower_assignment_gets_a_smaller_starter(tmp_path: Path) -> None:
    rubric = parse_rubric('[assignment]\ncovers = ["naive_ops"]')
    module = load(write_starter(rubric, tmp_path / "s.py", template="adapter").read_text())
    assert verbs_of(module.ADAPTER) == set(VERBS["core"]) | set(VERBS["naive_ops"])
    assert module.ADAPTER.capabilities == frozenset({"naive_ops"})


def test_the_notebook_starter_is_valid_and_holds_the_same_code(tmp_path: Path) -> None:
    path = write_starter(load_rubric(), tmp_path / "starter.ipynb", template="adapter")
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    code = [c.source for c in nb.cells if c.cell_type == "code"]
    assert len(code) == len(CHAPTER_VERBS) + 2  # the imports, one cell per verb, the adapter
    assert sum(1 for c in nb.cells if c.cell_type == "markdown") >= 8
    module = load("\n\n\n".join(code))
    assert verbs_of(module.ADAPTER) == CHAPTER_VERBS


@pytest.mark.slow
def test_the_starter_graded_as_is_scores_0(tmp_path: Path) -> None:
    path = write_starter(load_rubric(), tmp_path / "adapter.py", template="adapter")
    run = run_grade(str(path), tmp_path / "grade", load_rubric())
    assert run.report is not None, run.error
    scored, _ = score_report(run.report, load_rubric())
    assert sum(s.max_score for s in scored) == 100
    assert sum(s.score for s in scored) == 0


def test_the_cli_writes_a_notebook_and_refuses_a_bad_format(tmp_path: Path) -> None:
    out = tmp_path / "nb.ipynb"
    ok = subprocess.run(
        [sys.executable, "-m", "dl_ch2_tools", "starter", "--format", "ipynb", "-o", str(out)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert ok.returncode == 0, ok.stderr
    assert json.loads(out.read_text())["nbformat"] == 4
    bad = subprocess.run(
        [sys.executable, "-m", "conformance", "starter", "--format", "txt", "-o", str(out)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert bad.returncode == 2 and "--format" in bad.stderr
