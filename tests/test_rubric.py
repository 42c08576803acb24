"""The course rubric: objectives, mastery or partial credit, what an assignment covers (i22)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from conformance.adapter import CAPABILITIES, CHAPTER_CAPABILITIES, OPT_IN_CAPABILITIES
from conformance.grading.rubric import load_rubric, parse_rubric, score_report

RUBRICS = Path(__file__).resolve().parents[1] / "conformance" / "grading"

ROOT = Path(__file__).resolve().parent.parent


def spec(
    spec_id: str, outcome: str, message: str = "", requires: tuple[str, ...] = ()
) -> dict[str, Any]:
    section = spec_id.split("test_s")[1][:3].replace("_", ".") if "test_s" in spec_id else "2.3"
    return {
        "id": spec_id,
        "section": section,
        "outcome": outcome,
        "message": message,
        "requires": list(requires),
    }


def report(*specs: dict[str, Any]) -> dict[str, Any]:
    return {"schema": "dl-ch2-conformance-report/2", "specs": list(specs)}


OBJECTIVES = """
[[objective]]
name = "Dot"
points = 10
match = ["test_dot_*"]

[[objective]]
name = "Training"
section = "2.5"
points = 30
match = ["test_step*", "test_fit"]

[[objective]]
name = "Fit"
points = 20
match = ["test_fit"]
"""

SPECS = [
    spec("specs/test_s2_3_t.py::test_dot_a", "passed"),
    spec("specs/test_s2_3_t.py::test_dot_b", "failed", "dot: 3 of 4 differ"),
    spec("specs/test_s2_3_t.py::test_dot_c", "passed"),
    spec("specs/test_s2_5_m.py::test_step", "passed", requires=("training",)),
    spec("specs/test_s2_5_m.py::test_step_2", "passed", requires=("training",)),
    spec("specs/test_s2_5_m.py::test_fit", "passed", requires=("training",)),
    spec("specs/test_s2_3_t.py::test_relu", "passed"),
]


def by_id(entries: list[Any]) -> dict[str, Any]:
    return {e.id.rpartition("::")[2]: e for e in entries}


def test_mastery_an_objective_scores_only_when_every_spec_passes() -> None:
    scored, _ = score_report(report(*SPECS), parse_rubric(OBJECTIVES))
    e = by_id(scored)
    # Dot: one of three failed -> 0 of 10; Training: both steps passed -> 30; test_fit
    # counts towards Fit (the last matching objective), not Training
    assert (e["Dot"].score, e["Dot"].max_score, e["Dot"].passed) == (0.0, 10.0, False)
    assert (e["Training"].score, e["Training"].max_score) == (30.0, 30.0)
    assert (e["Fit"].score, e["Fit"].max_score) == (20.0, 20.0)
    assert e["test_fit"].objective == "Fit"
    assert "test_dot_b" in e["Dot"].output and "1 of 3 specs failed" in e["Dot"].output
    # a spec inside an objective is worth 0 of 0 and keeps its message; one outside scores
    # its own points (points.default = 1)
    assert (e["test_dot_b"].score, e["test_dot_b"].max_score) == (0.0, 0.0)
    assert e["test_dot_b"].output == "dot: 3 of 4 differ" and not e["test_dot_b"].passed
    assert (e["test_relu"].score, e["test_relu"].max_score, e["test_relu"].objective) == (
        1.0,
        1.0,
        None,
    )
    # objectives first, in the rubric's order, numbered 0.k; the section as given, else the
    # first spec's
    assert [s.kind for s in scored[:3]] == ["objective"] * 3
    assert [(s.number, s.section) for s in scored[:3]] == [
        ("0.1", "2.3"),
        ("0.2", "2.5"),
        ("0.3", "2.5"),
    ]
    assert sum(s.score for s in scored) == 51.0 and sum(s.max_score for s in scored) == 61.0


def test_partial_credit_gives_the_fraction_of_specs_passed() -> None:
    rubric = parse_rubric('[points]\ncredit = "partial"\n' + OBJECTIVES)
    scored, _ = score_report(report(*SPECS), rubric)
    dot = by_id(scored)["Dot"]
    assert dot.score == pytest.approx(10.0 * 2 / 3) and dot.max_score == 10.0
    assert "partial credit: 2 of 3 specs passed" in dot.output


def test_hidden_failed_specs_are_counted_but_not_named() -> None:
    rubric = parse_rubric(OBJECTIVES + '[[rule]]\nmatch = "test_dot_b"\nvisibility = "hidden"\n')
    dot = by_id(score_report(report(*SPECS), rubric)[0])["Dot"]
    assert "test_dot_b" not in dot.output and "1 hidden spec(s)" in dot.output


def test_an_unclaimed_covered_capability_scores_zero_for_its_objective() -> None:
    # not claiming training: its specs fail, so the Training objective scores 0 of 30
    specs = [
        spec(
            "specs/test_s2_5_m.py::test_step", "not claimed", "not claimed: training", ("training",)
        ),
        spec("specs/test_s2_5_m.py::test_step_2", "passed"),
    ]
    scored, _ = score_report(report(*specs), parse_rubric(OBJECTIVES))
    e = by_id(scored)
    assert (e["Training"].score, e["Training"].max_score) == (0.0, 30.0)
    assert "covers the capability 'training'" in e["test_step"].output


def test_an_old_report_without_requires_falls_back_on_the_not_claimed_message() -> None:
    old = {
        "id": "specs/test_s2_5_m.py::test_step",
        "section": "2.5",
        "outcome": "not claimed",
        "message": "not claimed: training",
    }
    scored, _ = score_report(report(old), parse_rubric(""))
    assert [(s.score, s.max_score, s.passed) for s in scored] == [(0.0, 1.0, False)]


@pytest.mark.parametrize("outcome", ["passed", "failed", "not claimed"])
def test_specs_of_capabilities_the_assignment_does_not_cover_are_left_out(outcome: str) -> None:
    # a spec needing input_checks (opt-in) and training: left out whatever happened to it
    s = spec(
        "specs/test_s2_5_i.py::test_fit_checks",
        outcome,
        "not claimed: training",
        ("input_checks", "training"),
    )
    scored, notes = score_report(report(s, SPECS[0]), parse_rubric(OBJECTIVES))
    assert "test_fit_checks" not in by_id(scored)
    assert any("input_checks" in n for n in notes)


def test_a_rubric_narrows_the_assignment_explicitly() -> None:
    rubric = parse_rubric('[assignment]\ncovers = ["naive_ops"]\n' + OBJECTIVES)
    assert rubric.covers == frozenset({"naive_ops"})
    scored, _ = score_report(report(*SPECS), rubric)
    # training is not covered: its specs and the objectives made of them are left out
    assert set(by_id(scored)) == {"Dot", "test_dot_a", "test_dot_b", "test_dot_c", "test_relu"}


def test_requires_adds_an_opt_in_capability_to_the_chapter() -> None:
    rubric = parse_rubric('[assignment]\nrequires = ["input_checks"]')
    assert rubric.covers == frozenset(CHAPTER_CAPABILITIES) | {"input_checks"}


def test_any_rubric_covers_the_chapter_by_default() -> None:
    assert parse_rubric("").covers == frozenset(CHAPTER_CAPABILITIES)
    assert set(CHAPTER_CAPABILITIES) == {
        "naive_ops",
        "autodiff",
        "training",
        "momentum",
        "rmsprop",
        "keras_init",
        "random_init",
    }
    assert OPT_IN_CAPABILITIES | set(CHAPTER_CAPABILITIES) == set(CAPABILITIES)


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ('[points]\ncredit = "some"', "points.credit"),
        ('[assignment]\ncovers = ["teleport"]', "teleport"),
        ('[assignment]\ncovers = "training"', "assignment.covers"),
        ('[[objective]]\npoints = 1\nmatch = ["x"]', "name"),
        ('[[objective]]\nname = "A"\npoints = 1', "match"),
        ('[[objective]]\nname = "A"\nmatch = ["x"]', "points"),
        ('[[objective]]\nname = "A"\nmatch = []\npoints = 1', "match"),
        ('[[objective]]\nname = "A"\nmatch = "x"\npoints = -1', "points"),
        ('[[objective]]\nname = "A"\nmatch = "x"\npoints = 1\nweight = 2', "weight"),
        (
            '[[objective]]\nname = "A"\nmatch = "x"\npoints = 1\n'
            '[[objective]]\nname = "A"\nmatch = "y"\npoints = 1',
            "taken",
        ),
    ],
)
def test_bad_objective_or_coverage_is_a_value_error_naming_it(text: str, names: str) -> None:
    with pytest.raises(ValueError, match=names):
        parse_rubric(text, "r.toml")


# -- the default course rubric ---------------------------------------------------------------


def _suite_spec_ids() -> list[str]:
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "conformance", "--impl", "numpy", "--collect-only", "-q"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    return [line for line in out.splitlines() if "::" in line]


def test_every_spec_of_the_suite_counts_towards_an_objective() -> None:
    rubric = load_rubric()
    ids = _suite_spec_ids()
    assert len(ids) > 150
    assert [i for i in ids if rubric.objective_for(i) is None] == []


def test_a_spec_of_section_2_2_counts_towards_the_2_2_objective_not_a_2_3_one() -> None:
    """A §2.2 spec named test_reshape_* was counted under "Reshaping (§2.3.4)": a §2.2 bug
    cost the §2.3.4 objective, and the §2.2 column missed it."""
    for name in ("default", "extended"):
        rubric = load_rubric(Path(RUBRICS) / f"rubric.{name}.toml")
        sid = "specs/test_s2_2_data_representations.py::test_reshape_builds_the_chapter_tensors"
        objective = rubric.objective_for(sid + "[x]")
        assert objective is not None and objective.section == "2.2", (name, objective)
        moved = "specs/test_s2_3_tensor_operations.py::test_reshape_exact_values"
        assert "§2.3.4" in str(getattr(rubric.objective_for(moved), "name", "")), name


def test_default_rubric_is_the_chapter_by_objective_worth_100_points() -> None:
    rubric = load_rubric()
    assert rubric.covers == frozenset(CHAPTER_CAPABILITIES)
    assert rubric.credit == "mastery"
    in_chapter = [o for o in rubric.objectives if not o.extension]
    assert len(in_chapter) == 11
    assert sum(o.points for o in in_chapter) == 100
    assert all(5 <= o.points <= 20 for o in rubric.objectives)
    # issue 27: the suite's extensions are opt-in, named by the assignment
    extensions = [o.name for o in rubric.objectives if o.extension]
    assert len(extensions) == 6 and all(n.startswith("Extension: ") for n in extensions)
    assert rubric.extensions == frozenset()
