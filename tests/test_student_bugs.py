"""Realistic student bugs cost real points, once (issues 22 and 27).

Each bug of tests/fixtures/student_bugs/bugs.toml is one line of a correct NumPy submission
(correct.py) changed; one ``grade-all`` batch grades them all, with the book-style submission
(tests/fixtures/book_style.py), under the rubric of an assignment that covers the chapter and
every extension (``rubric.extended.toml``: the fixtures write every verb). Every bug must cost
at least 5% of the grade and at most 20% (one bug, one charge: dependency-aware mastery),
and each score must match the table (published in docs/grading-bugs.md). The book-style
submission scores 100%.

``python tests/test_student_bugs.py`` grades them and prints the table in Markdown.
"""

from __future__ import annotations

import dataclasses
import statistics
import sys
from pathlib import Path
from typing import Any

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
BUGS_DIR = ROOT / "tests" / "fixtures" / "student_bugs"
BOOK_STYLE = ROOT / "tests" / "fixtures" / "book_style.py"
DOC = ROOT / "docs" / "grading-bugs.md"
EXTENDED = ROOT / "conformance" / "grading" / "rubric.extended.toml"


def load_bugs() -> list[dict[str, Any]]:
    bugs: list[dict[str, Any]] = tomllib.loads((BUGS_DIR / "bugs.toml").read_text())["bug"]
    return bugs


def write_submissions(dest: Path) -> list[str]:
    """The buggy copies of correct.py (one .py per bug) and the book-style file, in ``dest``."""
    base = (BUGS_DIR / "correct.py").read_text()
    dest.mkdir(parents=True, exist_ok=True)
    names = []
    for bug in load_bugs():
        assert base.count(bug["old"]) == 1, f"{bug['name']}: 'old' must occur once in correct.py"
        (dest / f"{bug['name']}.py").write_text(base.replace(bug["old"], bug["new"]))
        names.append(bug["name"])
    (dest / "book_style.py").write_text(BOOK_STYLE.read_text())
    return names


def grade_bugs(tmp: Path) -> dict[str, float]:
    """Percentages by submission name, from one grade-all batch with the default rubric."""
    from conformance.grading.grade_all import grade_all
    from conformance.grading.rubric import load_rubric

    write_submissions(tmp / "subs")
    # a generous spec timeout: on a loaded machine a slow spec must not change a score
    rubric = dataclasses.replace(load_rubric(EXTENDED), spec_timeout=120.0)
    rows = grade_all(tmp / "subs", tmp / "out", rubric, jobs=2, progress=False)
    scores = {}
    for row in rows:
        assert row.status == "ok", f"{row.submission}: {row.status} {row.reason}"
        assert row.max_score == 100
        scores[row.submission.removesuffix(".py")] = round(100 * row.score / row.max_score, 1)
    return scores


def markdown_table(scores: dict[str, float]) -> str:
    lines = [
        "| fixture | § | bug | breaks training | score % |",
        "|---|---|---|---|---|",
    ]
    for bug in load_bugs():
        training = "yes" if bug["breaks_training"] else ""
        lines.append(
            f"| `{bug['name']}` | {bug['section']} | {bug['what']} | {training} | "
            f"{scores[bug['name']]:g} |"
        )
    return "\n".join(lines)


def recorded_table() -> dict[str, float]:
    """The scores published in docs/grading-bugs.md (fixture -> score %)."""
    table = {}
    for line in DOC.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 5 and cells[0].startswith("`"):
            table[cells[0].strip("`")] = float(cells[4])
    return table


@pytest.fixture(scope="module")
def scores(tmp_path_factory: pytest.TempPathFactory) -> dict[str, float]:
    return grade_bugs(tmp_path_factory.mktemp("bugs"))


def test_there_are_at_least_30_bugs_spread_over_the_chapter() -> None:
    bugs = load_bugs()
    assert len(bugs) >= 30
    assert len({b["name"] for b in bugs}) == len(bugs)
    assert {b["section"] for b in bugs} == {"2.1", "2.3", "2.4", "2.5"}


def test_the_correct_base_and_each_bug_differ_by_one_line(tmp_path: Path) -> None:
    base = (BUGS_DIR / "correct.py").read_text().splitlines()
    for name in write_submissions(tmp_path):
        buggy = (tmp_path / f"{name}.py").read_text().splitlines()
        changed = [i for i, (a, b) in enumerate(zip(base, buggy, strict=False)) if a != b]
        assert len(buggy) == len(base) and len(changed) == 1, name


@pytest.mark.slow
def test_every_bug_costs_points_and_the_book_style_code_scores_full_marks(
    scores: dict[str, float],
) -> None:
    assert scores.pop("book_style") == 100.0
    bugs = {b["name"]: b for b in load_bugs()}
    costs = {name: 100.0 - score for name, score in scores.items()}
    assert set(costs) == set(bugs)
    assert {n: c for n, c in costs.items() if not 5 <= c <= 20} == {}
    assert statistics.median(costs.values()) >= 5
    training = {n: c for n, c in costs.items() if bugs[n]["breaks_training"]}
    assert len(training) >= 10


@pytest.mark.slow
def test_scores_match_the_published_table(scores: dict[str, float]) -> None:
    got = {k: v for k, v in scores.items() if k != "book_style"}
    assert recorded_table() == got


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        measured = grade_bugs(Path(tmp))
    print(f"book_style: {measured.pop('book_style')}%", file=sys.stderr)
    print(markdown_table(measured))
