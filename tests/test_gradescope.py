"""Gradescope's results.json, the rubric, and finding a submission's adapter (issue 13)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from gradescope_schema import errors, load_schema

from conformance.grading.gradescope import GradeRun, find_adapter, gradescope_results
from conformance.grading.rubric import load_rubric, parse_rubric, score_report

ROOT = Path(__file__).resolve().parent.parent
STUDENT = ROOT / "conformance" / "examples" / "student_numpy.py"


def spec(spec_id: str, section: str, outcome: str | None, message: str = "") -> dict[str, Any]:
    return {"id": spec_id, "section": section, "outcome": outcome, "message": message}


def report(specs: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"schema": "dl-ch2-conformance-report/2", "specs": specs, **extra}


def run_of(
    rep: dict[str, Any] | None, card: str = "## card\n", error: str | None = None
) -> GradeRun:
    return GradeRun(0 if rep else 2, rep, card, 4.4, error, "")


# -- the schema fixture and its checker ----------------------------------------------------


def test_schema_checker_rejects_what_gradescope_would_not_read() -> None:
    schema = load_schema()
    good = {"score": 1, "execution_time": 2, "output": "", "output_format": "md", "tests": []}
    assert errors(good, schema) == []
    bad_test = {
        "name": "t",
        "number": "2.3.1",
        "score": 0,
        "max_score": 1,
        "status": "error",  # only passed / failed
        "tags": ["2.3"],
        "visibility": "visible",
    }
    found = errors({**good, "tests": [bad_test], "scroe": 1}, schema)
    assert any("status" in e and "'error'" in e for e in found)
    assert any("unexpected field 'scroe'" in e for e in found)
    assert errors({**good, "tests": [{**bad_test, "status": "failed", "number": "2.x"}]}, schema)
    assert any("missing 'score'" in e for e in errors({"tests": []}, schema))


# -- the rubric ---------------------------------------------------------------------------


def test_default_rubric_gives_every_spec_one_visible_point() -> None:
    rubric = load_rubric()  # its objectives: tests/test_rubric.py
    assert rubric.requires == frozenset()
    assert rubric.uses_torch is False
    assert rubric.adapter == "adapter.py"
    assert rubric.points_for("specs/test_s2_5_x.py::test_fit", "2.5") == 1.0
    assert rubric.visibility_for("specs/test_s2_5_x.py::test_fit") == "visible"


def test_rubric_sections_and_rules_last_match_wins() -> None:
    rubric = parse_rubric(
        """
[points]
default = 1
[points.sections]
"2.5" = 3
[[rule]]
match = "*mnist*"
points = 0
visibility = "after_due_date"
[[rule]]
match = "test_mnist_arrays"
points = 5
"""
    )
    assert rubric.points_for("specs/a.py::test_relu", "2.3") == 1.0
    assert rubric.points_for("specs/a.py::test_fit", "2.5") == 3.0
    assert rubric.points_for("specs/a.py::test_mnist_training", "2.1") == 0.0
    assert rubric.points_for("specs/a.py::test_mnist_arrays", "2.1") == 5.0
    assert rubric.visibility_for("specs/a.py::test_mnist_arrays") == "after_due_date"
    assert rubric.visibility_for("specs/a.py::test_relu") == "visible"


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("[assignment]\nrequire = []", "require"),
        ('[assignment]\nrequires = ["teleport"]', "teleport"),
        ('[assignment]\nrequires = "training"', "assignment.requires"),
        ("[points]\ndefault = -1", "points.default"),
        ('[visibility]\ndefault = "secret"', "visibility.default"),
        ("[[rule]]\npoints = 2", "match"),
        ('[assignment]\nadapter = "sub/adapter.py"', "assignment.adapter"),
        ("[grading]\njobs = 0", "grading.jobs"),
        ("not toml [", "TOML"),
    ],
)
def test_bad_rubric_is_a_value_error_naming_the_key(text: str, names: str) -> None:
    with pytest.raises(ValueError, match=names):
        parse_rubric(text, "r.toml")


def test_missing_rubric_file_is_a_value_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot read"):
        load_rubric(tmp_path / "nope.toml")


# -- scoring ------------------------------------------------------------------------------

SPECS = [
    spec("specs/test_s2_3_t.py::test_add", "2.3", "passed"),
    spec("specs/test_s2_3_t.py::test_dot", "2.3", "failed", "dot: 3 of 4 differ"),
    spec("specs/test_s2_5_m.py::test_step", "2.5", "not claimed", "not claimed: training"),
    spec("specs/test_s2_5_m.py::test_rms", "2.5", "not claimed", "not claimed: rmsprop"),
    spec("specs/test_s2_1_f.py::test_mnist_arrays", "2.1", "skipped", "MNIST files not found"),
    spec("specs/test_s2_3_t.py::test_relu", "2.3", "skipped", "expectation file: broken"),
    spec("specs/test_s2_3_t.py::test_xf", "2.3", "xfailed", "known"),
]


def test_score_report_counts_required_capabilities_and_drops_the_rest() -> None:
    rubric = parse_rubric('[assignment]\ncovers = ["training"]\n[points.sections]\n"2.5" = 2')
    scored, notes = score_report(report(SPECS), rubric)
    by_name = {s.id.rpartition("::")[2]: s for s in scored}
    # rmsprop not covered (the rubric narrows the assignment): left out; MNIST skipped on the
    # grader: noted
    assert sorted(by_name) == ["test_add", "test_dot", "test_relu", "test_step", "test_xf"]
    assert (by_name["test_add"].score, by_name["test_add"].passed) == (1.0, True)
    assert (by_name["test_dot"].score, by_name["test_dot"].output) == (0.0, "dot: 3 of 4 differ")
    assert (by_name["test_step"].score, by_name["test_step"].max_score) == (0.0, 2.0)
    assert "covers the capability 'training'" in by_name["test_step"].output
    assert not by_name["test_relu"].passed and "expectations file" in by_name["test_relu"].output
    assert not by_name["test_xf"].passed
    assert [s.number for s in scored if s.section == "2.3"] == ["2.3.1", "2.3.2", "2.3.3", "2.3.4"]
    assert len(notes) == 1 and "test_mnist_arrays" in notes[0]


def test_incomplete_grade_shows_specs_not_run_as_failed_and_says_so() -> None:
    rep = report(
        [
            spec("specs/test_s2_3_t.py::test_add", "2.3", "passed"),
            spec("specs/test_s2_3_t.py::test_dot", "2.3", None),
        ],
        complete=False,
        incomplete_reason="the budget of 30 s ran out",
        not_run=["specs/test_s2_3_t.py::test_dot", "specs/test_s2_4_g.py::test_slope"],
    )
    results = gradescope_results(run_of(rep), load_rubric())
    assert errors(results, load_schema()) == []
    assert results["score"] == 1.0
    tests = {t["name"]: t for t in results["tests"]}
    assert set(tests) == {"test_add", "test_dot", "test_slope"}
    for name in ("test_dot", "test_slope"):
        assert tests[name]["status"] == "failed" and tests[name]["score"] == 0
        assert "Not run" in tests[name]["output"]
    assert tests["test_slope"]["tags"] == ["2.4"]
    assert results["output"].startswith("**Incomplete grade**: the budget of 30 s ran out")
    assert "2 spec(s) were not run" in results["output"]


def test_results_fields_follow_gradescope() -> None:
    rubric = parse_rubric('[[rule]]\nmatch = "test_dot"\nvisibility = "hidden"\npoints = 4')
    results = gradescope_results(run_of(report(SPECS[:2])), rubric)
    assert errors(results, load_schema()) == []
    assert results["output_format"] == "md" and results["output"].endswith("## card\n")
    assert results["execution_time"] == 4
    add, dot = results["tests"]
    assert add == {
        "name": "test_add",
        "number": "2.3.1",
        "score": 1.0,
        "max_score": 1.0,
        "status": "passed",
        "tags": ["2.3"],
        "visibility": "visible",
    }
    assert (dot["visibility"], dot["max_score"], dot["output"]) == (
        "hidden",
        4.0,
        "dot: 3 of 4 differ",
    )


def test_no_report_scores_zero_with_the_reason() -> None:
    results = gradescope_results(
        run_of(None, "", "importing adapter.py raised NameError"), load_rubric()
    )
    assert errors(results, load_schema()) == []
    assert results["score"] == 0 and results["tests"] == []
    assert "NameError" in results["output"]


# -- finding the adapter ------------------------------------------------------------------


def test_find_adapter_prefers_the_rubric_name_then_the_single_adapter_file(tmp_path: Path) -> None:
    sub = tmp_path / "alice"
    (sub / "pkg").mkdir(parents=True)
    (sub / "helpers.py").write_text("X = 1\n")
    # found by parsing, never executed: this file would exit the grader if imported
    (sub / "pkg" / "impl.py").write_text("raise SystemExit(0)\nADAPTER = object()\n")
    assert find_adapter(sub) == sub / "pkg" / "impl.py"
    (sub / "adapter.py").write_text("from pkg.impl import ADAPTER\n")
    assert find_adapter(sub) == sub / "adapter.py"
    (sub / "adapter.py").unlink()
    (sub / "other.py").write_text("ADAPTER: object = object()\n")
    with pytest.raises(ValueError, match="several files define ADAPTER"):
        find_adapter(sub)
    empty = tmp_path / "bob"
    empty.mkdir()
    (empty / "main.py").write_text("print('hi')\n")
    with pytest.raises(ValueError, match=r"no adapter\.py, no \.py file assigning ADAPTER"):
        find_adapter(empty)
    (empty / "notes.txt").write_text("ADAPTER = 1\n")
    with pytest.raises(ValueError, match=r"not a \.py file"):
        find_adapter(empty / "notes.txt")


def test_find_adapter_accepts_a_single_file(tmp_path: Path) -> None:
    f = tmp_path / "carol.py"
    f.write_text("ADAPTER = None\n")
    assert find_adapter(f) == f


# -- end to end through the command -------------------------------------------------------


def _grade_cli(
    tmp_path: Path, adapter: str, rubric_text: str, *extra: str
) -> tuple[int, dict[str, Any]]:
    rubric = tmp_path / "rubric.toml"
    rubric.write_text(rubric_text)
    out = tmp_path / "results.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "conformance",
            "grade",
            adapter,
            "--gradescope",
            str(out),
            "--rubric",
            str(rubric),
            *extra,
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.exists(), proc.stdout[-2000:] + proc.stderr[-2000:]
    return proc.returncode, json.loads(out.read_text())


@pytest.mark.slow
def test_grade_gradescope_on_the_student_example(tmp_path: Path) -> None:
    # the student example claims every capability except mnist_training
    code, results = _grade_cli(
        tmp_path,
        str(STUDENT),
        '[assignment]\nrequires = ["mnist_training"]\n[points.sections]\n"2.3" = 2\n',
        "--report-json",
        str(tmp_path / "report.json"),
    )
    report = json.loads((tmp_path / "report.json").read_text())  # the grader's own count
    passed = sum(1 for s in report["specs"] if s["outcome"] == "passed")
    assert errors(results, load_schema()) == []
    assert code == 0
    tests = results["tests"]
    failed = [t for t in tests if t["status"] == "failed"]
    assert [t["name"] for t in failed] == ["test_trained_first_example_predicts_distributions"]
    assert failed[0]["score"] == 0 and "mnist_training" in failed[0]["output"]
    passed_23 = [t for t in tests if t["status"] == "passed" and t["tags"] == ["2.3"]]
    assert all(t["score"] == 2.0 for t in passed_23)
    others = [t for t in tests if t["status"] == "passed" and t["tags"] != ["2.3"]]
    assert results["score"] == 2.0 * len(passed_23) + len(others)
    assert len(passed_23) + len(others) == passed
    assert "student-numpy" in results["output"]


@pytest.mark.slow
def test_grade_gradescope_on_a_mutant_reports_failures(tmp_path: Path) -> None:
    code, results = _grade_cli(tmp_path, "conformance.mutants:relu_abs", "")
    assert errors(results, load_schema()) == []
    assert code == 1
    failed = [t for t in results["tests"] if t["status"] == "failed"]
    assert failed and all(t["score"] == 0 and t.get("output") for t in failed)
    assert results["score"] == len(results["tests"]) - len(failed)
    # the student sees why: what was checked, got and expected, and a runnable snippet
    assert all("reproduce with:" in t["output"] for t in failed)
    wrong_values = [t["output"] for t in failed if "values differ" in t["output"]]
    assert wrong_values, [t["name"] for t in failed]
    for text in wrong_values:
        assert "got" in text and "expected" in text, text[:500]
        assert "impl = load_adapter(" in text, text[:500]


def test_grade_gradescope_on_a_missing_adapter_is_a_usage_error(tmp_path: Path) -> None:
    code, results = _grade_cli(tmp_path, str(tmp_path / "absent.py"), "")
    assert code == 2
    assert results["score"] == 0 and "does not exist" in results["output"]


@pytest.mark.slow
def test_grade_gradescope_on_an_adapter_that_runs_out_of_budget(tmp_path: Path) -> None:
    adapter = tmp_path / "slow_adapter.py"
    adapter.write_text(  # self-contained, as a submission is: the worker sees no suite
        STUDENT.read_text() + "import time\n"
        "class Slow(StudentAdapter):\n"
        "    name = 'slow'\n"
        "    def dot(self, x, y):\n"
        "        time.sleep(120)\n"
        "ADAPTER = Slow()\n"
    )
    # dot sleeps past the budget (the spec timeout is longer), so the specs after it never run;
    # the budget leaves room for collection on a loaded machine
    code, results = _grade_cli(
        tmp_path, str(adapter), "[grading]\nbudget = 40\nspec_timeout = 200\n"
    )
    assert errors(results, load_schema()) == []
    assert code == 3
    assert results["output"].startswith("**Incomplete grade**")
    not_run = [t for t in results["tests"] if t.get("output", "").startswith("Not run")]
    assert not_run and all(t["status"] == "failed" and t["score"] == 0 for t in not_run)
