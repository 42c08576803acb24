"""Issue 27 item 6: the course starter is the chapter's code cells, blank, graded by the book's
names; its markdown states what every graded piece must do.

Filled with the book-style NumPy notebook's cells it scores full marks under the default
rubric; blank, it scores only what the grader's NumPy serves, each piece "not submitted".
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import nbformat
import pytest
from fixtures.book_notebooks import book_cells

from conformance.grading.gradescope import run_grade
from conformance.grading.rubric import ScoredSpec, load_rubric, score_report
from conformance.grading.starter import BOOK_PIECES, write_starter

PIECE = re.compile(r"^(?:def|class)\s+(\w+)", re.MULTILINE)


def _starter(tmp_path: Path) -> nbformat.NotebookNode:
    path = write_starter(load_rubric(), tmp_path / "chapter02.ipynb")  # the default: book
    nb = nbformat.read(path, as_version=4)  # type: ignore[no-untyped-call]
    nbformat.validate(nb)  # type: ignore[no-untyped-call]
    return nb


def _fill(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Each fixture cell into the starter cell of the book piece it defines; imports and
    helpers into the setup cell; the rest (MNIST, plots, training) as cells at the end."""
    slots = {c.metadata["dl_ch2"]["book"]: c for c in nb.cells if c.cell_type == "code"}
    extra = []
    for cell in book_cells("numpy"):
        pieces = [p for p in PIECE.findall(cell) if p in slots]
        helpers = not pieces and (PIECE.search(cell) or cell.startswith("import "))
        if pieces or helpers:
            slot = slots[pieces[0] if pieces else "setup"]
            slot.source = f"{slot.source}\n\n{cell}".strip()
        else:
            extra.append(nbformat.v4.new_code_cell(cell))  # type: ignore[no-untyped-call]
    nb.cells += extra
    return nb


def _grade(tmp_path: Path, nb: nbformat.NotebookNode) -> tuple[float, list[ScoredSpec]]:
    path = tmp_path / "chapter02.ipynb"
    nbformat.write(nb, str(path))  # type: ignore[no-untyped-call]
    env = {**os.environ, "DL_CH2_ISOLATION": "process"}
    run = run_grade(str(path), tmp_path / "grade", load_rubric(), env=env)
    assert run.report is not None, run.error
    scored, _ = score_report(run.report, load_rubric())
    return sum(s.score for s in scored), scored


def test_the_book_starter_is_blank_code_under_markdown_stating_what_is_graded(
    tmp_path: Path,
) -> None:
    nb = _starter(tmp_path)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.source == "" for c in code)
    assert [c.metadata["dl_ch2"]["book"] for c in code] == ["setup"] + [
        p for p, _, _ in BOOK_PIECES
    ]
    text = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    rubric = load_rubric()
    for objective in rubric.objectives:  # every graded objective named, with its points
        if rubric.graded(objective):
            assert f"{objective.name} ({objective.points:g} points" in text, objective.name
    # the requirements a correct first try used to miss (issue 27), stated
    for need in ("renormalise", "must raise", "*mean* loss", "last batch is short", "in place",
                 "`learning_rate` is a module global", "keep their dtype"):  # fmt: skip
        assert need in text, need
    assert "ADAPTER" not in text and "adapter" not in "".join(c.source for c in code)


def test_the_adapter_template_stays_available(tmp_path: Path) -> None:
    path = write_starter(load_rubric(), tmp_path / "adapter.py", template="adapter")
    assert "ADAPTER = StudentAdapter()" in path.read_text()
    with pytest.raises(ValueError, match="--template"):
        write_starter(load_rubric(), tmp_path / "x.py", template="keras")


def test_the_book_starter_filled_with_the_books_numpy_code_scores_full_marks(
    tmp_path: Path,
) -> None:
    score, scored = _grade(tmp_path, _fill(_starter(tmp_path)))
    failed = [(s.id, s.output[:200]) for s in scored if s.kind == "objective" and not s.passed]
    assert score == sum(s.max_score for s in scored) == 100, failed


def test_the_blank_book_starter_scores_low_and_says_not_submitted(tmp_path: Path) -> None:
    score, scored = _grade(tmp_path, _starter(tmp_path))
    assert score <= 15  # only the objectives the grader's NumPy serves (§2.1, §2.2, §2.3.4)
    heads = [s for s in scored if s.kind == "objective" and not s.passed]
    assert len(heads) >= 6
    for head in heads:  # each failed objective says why: its own piece was not submitted
        specs = [s for s in scored if s.kind == "spec" and s.objective == head.objective]
        said = [head.output, *(s.output for s in specs if not s.passed)]
        assert any("not submitted" in text for text in said), head.objective
