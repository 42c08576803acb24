"""Grading real code with no glue (issue 27): the pieces, each attacked on its own.

- one bug, one charge: a failure downstream of a failed prerequisite is not charged, a piece
  not submitted is charged to the objective owning it and never forgiven;
- notebook cells: magics honoured or skipped, never silently dropped;
- frameworks from imports, ``--allow`` by import name, unknown names refused;
- a folder without ADAPTER: its notebook, or the script no sibling imports.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conformance.grading.cells import python_of, statements_as_cells
from conformance.grading.frameworks import book_entry, detect_imports, resolve_packages
from conformance.grading.rubric import parse_rubric, score_report

RUBRIC = """
[assignment]
covers = []

[[objective]]
name = "Dense"
points = 10
owns = ["NaiveDense"]
match = ["test_dense_*"]

[[objective]]
name = "Fit"
points = 20
after = ["Dense"]
owns = ["fit"]
match = ["test_fit_*"]

[[objective]]
name = "Extra"
points = 5
extension = true
match = ["test_extra_*"]
"""


def _spec(name: str, outcome: str, message: str = "") -> dict[str, Any]:
    return {"id": f"specs/test_s2_5_x.py::{name}", "section": "2.5", "outcome": outcome,
            "message": message, "requires": []}  # fmt: skip


def _scores(*specs: dict[str, Any], rubric: str = RUBRIC) -> dict[str, float]:
    entries, _ = score_report({"specs": list(specs)}, parse_rubric(rubric))
    return {str(e.objective): e.score for e in entries if e.kind == "objective"}


def test_a_failure_explained_by_a_failed_prerequisite_is_not_charged_again() -> None:
    got = _scores(
        _spec("test_dense_forward", "failed", "predict: 3 of 8 values differ"),
        _spec("test_fit_a", "failed", "fit: losses differ"),
        _spec("test_fit_b", "passed"),
    )
    # forgiven up to what the failed prerequisite cost (Dense's 10), never more: see below
    assert got == {"Dense": 0.0, "Fit": 10.0}
    alone = _scores(_spec("test_dense_forward", "passed"), _spec("test_fit_a", "failed", "x"))
    assert alone == {"Dense": 10.0, "Fit": 0.0}  # no prerequisite failed: fit's own charge
    stub = _scores(_spec("test_dense_forward", "failed", "x"), _spec("test_fit_a", "failed", "y"))
    assert stub == {"Dense": 0.0, "Fit": 0.0}  # nothing of fit passed: no forgiveness


CHAIN = """
[assignment]
covers = []

[[objective]]
name = "Loss"
points = 10
match = ["test_loss_*"]

[[objective]]
name = "Step"
points = 15
after = ["Loss"]
match = ["test_step_*"]

[[objective]]
name = "Fit"
points = 20
after = ["Step"]
match = ["test_fit_*"]
"""


def test_breaking_a_correct_prerequisite_on_purpose_never_raises_the_grade() -> None:
    # The attack: a student whose fit is broken (the feedback shows it) breaks the loss or
    # the step, which were right, so that they "explain" fit. What is given back is bounded
    # by what the broken prerequisites cost, each given back once: it never pays.
    fit = [_spec("test_fit_a", "failed", "fit: losses differ"), _spec("test_fit_b", "passed")]
    ok_loss, bad_loss = _spec("test_loss_a", "passed"), _spec("test_loss_a", "failed", "2 differ")
    ok_step, bad_step = _spec("test_step_a", "passed"), _spec("test_step_a", "failed", "differ")
    step_b = _spec("test_step_b", "passed")
    honest = _scores(ok_loss, ok_step, step_b, *fit, rubric=CHAIN)
    assert honest == {"Loss": 10.0, "Step": 15.0, "Fit": 0.0}
    for broken in ([bad_loss, ok_step], [ok_loss, bad_step], [bad_loss, bad_step]):
        gaming = _scores(*broken, step_b, *fit, rubric=CHAIN)
        assert sum(gaming.values()) <= sum(honest.values()), (broken, gaming)
    # the loss's 10 points go back once, to the first objective it explains
    both = _scores(bad_loss, bad_step, step_b, *fit, rubric=CHAIN)
    assert both == {"Loss": 0.0, "Step": 10.0, "Fit": 15.0}


def test_not_submitted_is_charged_to_its_owner_and_never_forgiven() -> None:
    absent = "fit(...) raised NotImplementedError: not submitted: the submission defines no fit"
    got = _scores(
        _spec("test_dense_forward", "failed", "predict: values differ"),
        _spec("test_fit_a", "failed", absent),
        _spec("test_fit_b", "passed"),
    )
    assert got == {"Dense": 0.0, "Fit": 0.0}
    # a Dense spec that calls a missing fit is charged to Fit, not to Dense
    moved = _scores(
        _spec("test_dense_forward", "passed"),
        _spec("test_dense_after_fit", "failed", absent),
        _spec("test_fit_a", "passed"),
    )
    assert moved == {"Dense": 10.0, "Fit": 0.0}
    signature = "fit(...) raised TypeError: fit() missing 1 required positional argument: 'x'"
    own = _scores(
        _spec("test_dense_forward", "failed", "values differ"),
        _spec("test_fit_a", "failed", signature),
        _spec("test_fit_b", "passed"),
    )
    assert own == {"Dense": 0.0, "Fit": 0.0}  # the book's arguments refused: fit's own fault


def test_extensions_count_only_when_the_assignment_names_them() -> None:
    specs = (_spec("test_dense_forward", "passed"), _spec("test_extra_rotate", "failed", "x"))
    assert _scores(*specs) == {"Dense": 10.0}
    named = RUBRIC.replace("covers = []", 'covers = []\nextensions = ["Extra"]')
    assert _scores(*specs, rubric=named) == {"Dense": 10.0, "Extra": 0.0}
    with pytest.raises(ValueError, match="after names"):
        parse_rubric(RUBRIC.replace('after = ["Dense"]', 'after = ["Nope"]'))


def test_magics_are_honoured_or_skipped_with_a_note_never_silently() -> None:
    src, notes = python_of(3, "%%time\nx = 1\n%matplotlib inline\ny = x % 2", "tensorflow")
    assert src is not None and "x = 1" in src and "y = x % 2" in src and "%matplotlib" not in src
    assert any("%%time" in n and "honoured" in n for n in notes)
    assert any("%matplotlib inline" in n and "skipped" in n for n in notes)
    skipped, notes = python_of(4, "%%backend jax\nimport jax", "tensorflow")
    assert skipped is None and "skipped" in notes[0] and "cell 4" in notes[0]
    run, notes = python_of(5, "%%backend tensorflow\nz = 2", "tensorflow")
    assert run is not None and "z = 2" in run and "KERAS_BACKEND=tensorflow" in notes[0]
    timed, notes = python_of(6, "%timeit -n 3 f(1)", None)
    assert timed is not None and timed.strip() == "f(1)"
    cells = statements_as_cells("import os\n\n@staticmethod\ndef f():\n    return 1\nf()\n")
    assert [c["number"] for c in cells] == [1, 3, 6]


def test_frameworks_are_found_from_imports_and_unknown_allows_refused(tmp_path: Path) -> None:
    nb = tmp_path / "nb.ipynb"
    cells = [{"cell_type": "code", "source": ["%matplotlib inline\n", "import tensorflow as tf"]},
             {"cell_type": "code", "source": "from keras import ops"}]  # fmt: skip
    nb.write_text(json.dumps({"cells": cells}))
    assert detect_imports(nb) == ["keras", "tensorflow"]
    (tmp_path / "deep.py").write_text("(" * 100_000)  # hostile text: no crash, no framework
    assert detect_imports(tmp_path / "deep.py") == []
    with pytest.raises(ValueError, match="no_such_module_xyz"):
        resolve_packages(["no_such_module_xyz"])
    if importlib.util.find_spec("tensorflow") is not None:
        dists = resolve_packages(["numpy"], ["tensorflow"])
        assert dists[0] == "numpy" and any(d.lower().startswith("tensorflow") for d in dists)


def test_a_folder_without_adapter_is_graded_through_its_entry_script(tmp_path: Path) -> None:
    (tmp_path / "dense.py").write_text("class NaiveDense:\n    pass\n")
    (tmp_path / "train.py").write_text("def one_training_step(m, x, y):\n    pass\n")
    main = tmp_path / "main.py"
    main.write_text("from dense import NaiveDense\nfrom train import one_training_step\n")
    files = sorted(tmp_path.glob("*.py"))
    assert book_entry(files) == main
    (tmp_path / "other.py").write_text("from dense import NaiveDense\n")
    assert book_entry(sorted(tmp_path.glob("*.py"))) is None  # two scripts: ambiguous


_TORCH_READER = """
import math
import numpy as np
import torch as th
from torch import Tensor

def naive_relu(x):  # a reader's PyTorch loop: tensors in, tensors out
    return th.max(x, th.zeros_like(x))

def naive_add(x, y):  # the book's NumPy loop, in the same torch-importing file
    x = x.copy()
    for i in range(x.shape[0]):
        for j in range(x.shape[1]):
            x[i, j] += y[i, j]
    return x

class BatchGenerator:
    def __init__(self, images, labels, batch_size=128):
        self.index = 0
        self.images: Tensor = images
        self.labels: Tensor = labels
        self.batch_size = batch_size
        self.num_batches = math.ceil(len(images) / batch_size)

    def next(self):
        images = self.images[self.index : self.index + self.batch_size].clone()
        labels = self.labels[self.index : self.index + self.batch_size].clone()
        self.index += self.batch_size
        return images, labels
"""


def test_pytorch_code_gets_tensors_and_numpy_code_gets_arrays() -> None:
    """A reader's PyTorch loop (``th.zeros_like``, ``.clone()``) is called with tensors, as
    its author calls it; the book's NumPy loop beside it (``x.copy()``) with arrays."""
    pytest.importorskip("torch")
    from conformance.grading.book_names import BookAdapter, to_numpy

    ns: dict[str, Any] = {"__name__": "reader"}
    exec(compile(_TORCH_READER, "reader.py", "exec"), ns)
    adapter = BookAdapter(ns)
    x = np.array([[-1.0, 2.0, 0.5], [3.0, -4.0, 0.0]])
    assert to_numpy(adapter.naive_relu(x)).tolist() == [[0.0, 2.0, 0.5], [3.0, 0.0, 0.0]]
    assert to_numpy(adapter.naive_add(x, x)).tolist() == [[-2.0, 4.0, 1.0], [6.0, -8.0, 0.0]]
    images, labels = np.arange(10.0).reshape(5, 2), np.arange(5)
    got = adapter.batches(images, labels, 2)
    assert [to_numpy(b[1]).tolist() for b in got] == [[0, 1], [2, 3], [4]]


def test_an_objective_whose_specs_all_need_a_missing_piece_stays_in_the_total() -> None:
    """Fit's specs all fail on the missing NaiveDense (charged to Dense): Fit is still listed,
    at 0 of its 20 points with the reason, so the total stays 30 (a reader's PyTorch script
    with the step and fit as methods printed "15 / 65": the objectives had vanished)."""
    absent = (
        "dense_model(...) raised NotImplementedError: "
        "not submitted: the submission defines no NaiveDense"
    )
    entries, _ = score_report(
        {"specs": [_spec("test_dense_forward", "failed", absent),
                   _spec("test_fit_a", "failed", absent)]},
        parse_rubric(RUBRIC),
    )  # fmt: skip
    heads = {str(e.objective): e for e in entries if e.kind == "objective"}
    assert {k: (e.score, e.max_score) for k, e in heads.items()} == {
        "Dense": (0.0, 10.0),
        "Fit": (0.0, 20.0),
    }
    assert "NaiveDense" in heads["Fit"].output and "not graded" in heads["Fit"].output
