"""Issue 27 item 6: results.json nested by learning objective, without 0/0 entries; the
§2.2 column of the gradebook counts §2.2's objective."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from gradescope_schema import errors, load_schema

from conformance.grading.grade_all import row_from_run
from conformance.grading.gradescope import GradeRun, gradescope_results
from conformance.grading.rubric import load_rubric, parse_rubric

S22 = "specs/test_s2_2_data_representations.py::"
S23 = "specs/test_s2_3_tensor_operations.py::"
SNIPPET = "reproduce with:\n    import numpy as np\n    out1 = naive_relu(out0)"


def _spec(name: str, section: str, outcome: str, message: str = "") -> dict[str, Any]:
    return {"id": name, "section": section, "outcome": outcome, "message": message}


def _run(specs: list[dict[str, Any]]) -> GradeRun:
    report = {"schema": "dl-ch2-conformance-report/2", "specs": specs}
    return GradeRun(1, report, "## card\n", 3.0, None, "")


SPECS = [
    _spec(S22 + "test_s2_2_rank_of_a_matrix", "2.2", "passed"),
    _spec(S22 + "test_s2_2_slicing_batches", "2.2", "passed"),
    _spec(S23 + "test_relu_of_a_matrix", "2.3", "passed"),
    _spec(
        S23 + "test_elementwise_golden[relu]",
        "2.3",
        "failed",
        f"naive_relu: 3 of 6 values differ\n  got 1.5, expected 0.0\n{SNIPPET}",
    ),
    _spec(S23 + "test_dot_is_not_symmetric", "2.3", "passed"),
    _spec("specs/test_statistics.py::test_unmatched_thing", "other", "passed"),
]


def test_results_json_has_one_entry_per_objective_and_no_zero_point_entries() -> None:
    rubric = load_rubric()  # the default course rubric: objectives, 100 points
    results = gradescope_results(_run(SPECS), rubric)
    assert errors(results, load_schema()) == []
    tests = {t["name"]: t for t in results["tests"]}
    assert all(t["max_score"] > 0 for t in results["tests"]), tests.keys()
    names = {o.name for o in rubric.objectives}
    assert set(tests) <= names | {"test_unmatched_thing"}
    elementwise = next(n for n in tests if "§2.3.1" in n)
    relu = tests[elementwise]
    assert relu["status"] == "failed" and relu["score"] == 0 and relu["max_score"] == 5
    # the failed spec, its one-line message, and the snippet, in the objective's output
    assert "- test_elementwise_golden[relu]: naive_relu: 3 of 6 values differ" in relu["output"]
    assert "        out1 = naive_relu(out0)" in relu["output"]
    assert "See each spec's entry" not in relu["output"]
    dot = tests[next(n for n in tests if "§2.3.3" in n)]
    assert (dot["status"], dot["score"]) == ("passed", 5) and "Failed specs" not in dot["output"]
    # the total is the objectives' points earned (plus any spec outside every objective)
    assert results["score"] == sum(t["score"] for t in results["tests"])


def test_hidden_specs_are_counted_not_shown_in_their_objective() -> None:
    rubric = parse_rubric(
        '[[objective]]\nname = "ops"\npoints = 4\nmatch = ["test_*"]\nvisibility = "visible"\n'
        '[[rule]]\nmatch = "test_elementwise_*"\nvisibility = "hidden"\n'
    )
    results = gradescope_results(_run(SPECS[2:5]), rubric)
    assert errors(results, load_schema()) == []
    [entry] = results["tests"]
    assert entry["name"] == "ops" and entry["max_score"] == 4 and entry["score"] == 0
    assert "1 hidden spec" in entry["output"] and "naive_relu" not in entry["output"]


def test_the_gradebooks_section_2_2_column_counts_the_section_2_2_objective() -> None:
    rubric = load_rubric()
    [objective] = [o for o in rubric.objectives if o.matches(S22 + "test_s2_2_rank_of_a_matrix")]
    assert objective.section == "2.2"
    row = row_from_run("alice", _run(SPECS), rubric)
    assert row.sections.get("2.2") == objective.points > 0
    assert row.sections.get("2.3", 0) >= 5  # the tensor product objective passed


def test_find_adapter_reads_notebooks_without_nbformat(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The notebook assigning ADAPTER is found beside a scratch notebook, with magics in it,
    even where nbformat is not installed (the issue's "no .py file assigning ADAPTER")."""
    import json
    import sys

    from conformance.grading.gradescope import find_adapter

    def notebook(path: Path, *cells: str) -> None:
        doc = {"nbformat": 4, "nbformat_minor": 5, "metadata": {},
               "cells": [{"cell_type": "code", "source": c, "metadata": {}, "outputs": [],
                          "execution_count": None} for c in cells]}  # fmt: skip
        path.write_text(json.dumps(doc))

    sub = tmp_path / "sub"
    sub.mkdir()
    notebook(sub / "scratch.ipynb", "%matplotlib inline\nx = 1")
    notebook(sub / "mine.ipynb", "%%time\nnot python", "!pip list\nimport numpy as np",
             "class A:\n    pass\n\nADAPTER = A()")  # fmt: skip
    monkeypatch.setitem(sys.modules, "nbformat", None)  # import nbformat raises ImportError
    assert find_adapter(sub) == sub / "mine.ipynb"
