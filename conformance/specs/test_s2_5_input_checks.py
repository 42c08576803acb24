"""§2.5 the errors a library adds to the chapter's code (capability ``input_checks``).

The chapter's loops check nothing: NumPy wraps label -1 to the last class, a learning rate
of -0.5 climbs the loss, NaN images train to NaN weights and evaluate to an accuracy. An
implementation that claims ``input_checks`` refuses bad arguments before any work (before
any weight moves), raises on non-finite losses and predictions, and applies fit's
divergence rule (conformance/README.md, "input_checks"). Implementations that do not claim
it see these specs "not claimed".
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from conformance.golden import SMALL_LAYERS, load_case
from conformance.harness import Impl, check_close, check_equal

pytestmark = [pytest.mark.section("2.5"), pytest.mark.requires("input_checks")]


def _small_model(impl: Impl, case: str):  # type: ignore[no-untyped-def]
    c = load_case(case)
    ws = [w.astype(impl.dtype) for w in c.weights("w")]
    return c, ws, impl.call("dense_model", SMALL_LAYERS, ws, 0)


def _check_unchanged(impl: Impl, model, ws, after: str) -> None:  # type: ignore[no-untyped-def]
    for i, w in enumerate(impl.call("model_weights", model)):
        check_equal(impl, impl.to_np(w), ws[i], what=f"weights[{i}] after {after}")


@pytest.mark.requires("training")
@pytest.mark.parametrize(
    "rate", [0.0, -0.1, math.nan, math.inf, True], ids=["0", "-0.1", "nan", "inf", "True"]
)
def test_training_step_rejects_a_learning_rate_that_is_not_positive_and_finite(
    impl: Impl, rate: float
) -> None:
    c, ws, model = _small_model(impl, "dense_forward")
    x, y = impl.arr(c["x"]), impl.arr(c["out"].argmax(axis=1), "int64")
    impl.call("training_step", model, x, y, 0.1)
    _, ws, model = _small_model(impl, "dense_forward")
    impl.rejects("training_step", model, x, y, rate)
    _check_unchanged(impl, model, ws, f"training_step refused learning_rate={rate!r}")


@pytest.mark.requires("training")
@pytest.mark.parametrize(
    ("last", "dtype"),
    [(4, "int64"), (-1, "int64"), (1, "bool"), (1, "float64")],
    ids=["label_4_of_4_classes", "label_-1", "bool_labels", "float_labels"],
)
def test_fit_checks_every_label_before_any_weight_moves(impl: Impl, last: int, dtype: str) -> None:
    # the bad label sits in the last batch: a check at each batch would come too late
    c = load_case("fit")
    x, y = impl.arr(c["x"]), c["y"].astype(np.int64)
    model = impl.call("dense_model", SMALL_LAYERS, [w.astype(impl.dtype) for w in c.weights()], 0)
    impl.call("fit", model, x, impl.arr(y, "int64"), 1, 8, 0.5)
    ws = [w.astype(impl.dtype) for w in c.weights()]
    model = impl.call("dense_model", SMALL_LAYERS, ws, 0)
    bad = y.copy()
    bad[-1] = last
    impl.rejects("fit", model, x, impl.arr(bad.astype(dtype), dtype), 1, 8, 0.5)
    _check_unchanged(impl, model, ws, f"fit refused labels ending in {last} ({dtype})")


def test_loss_rejects_bool_labels(impl: Impl) -> None:
    p = impl.arr(np.full((2, 3), 1 / 3))
    impl.run("sparse_categorical_crossentropy", impl.arr(np.array([0, 1]), "int64"), p)
    impl.rejects("sparse_categorical_crossentropy", impl.arr(np.array([False, True]), "bool"), p)


@pytest.mark.parametrize("dtype", ["bool", "float64"])
def test_evaluate_rejects_labels_that_are_not_integers(impl: Impl, dtype: str) -> None:
    c, _, model = _small_model(impl, "dense_forward")
    x, labels = impl.arr(c["x"]), np.array([0, 1] * 4)
    impl.scalar("evaluate", model, x, impl.arr(labels, "int64"))
    impl.rejects("evaluate", model, x, impl.arr(labels.astype(dtype), dtype))


@pytest.mark.parametrize("batch_size", [None, 3])
def test_evaluate_rejects_labels_beyond_the_models_width(
    impl: Impl, batch_size: int | None
) -> None:
    # label 4 of a 4-class model would just count as wrong: an accuracy of 7/8, not an error
    c, _, model = _small_model(impl, "dense_forward")
    x, labels = impl.arr(c["x"]), c["out"].argmax(axis=1).astype(np.int64)
    impl.scalar("evaluate", model, x, impl.arr(labels, "int64"), batch_size)
    labels[5] = 4
    impl.rejects("evaluate", model, x, impl.arr(labels, "int64"), batch_size)


@pytest.mark.parametrize("batch_size", [None, 3])
def test_evaluate_rejects_nan_predictions_in_any_batch(impl: Impl, batch_size: int | None) -> None:
    # the NaN sits in the first of three batches: the last batch's predictions are finite
    c, _, model = _small_model(impl, "dense_forward")
    labels = impl.arr(c["out"].argmax(axis=1), "int64")
    impl.scalar("evaluate", model, impl.arr(c["x"]), labels, batch_size)
    x = c["x"].copy()
    x[0, 2] = np.nan
    impl.rejects("evaluate", model, impl.arr(x), labels, batch_size)


def test_evaluate_rejects_batch_size_0(impl: Impl) -> None:
    c, _, model = _small_model(impl, "dense_forward")
    x, labels = impl.arr(c["x"]), impl.arr(c["out"].argmax(axis=1), "int64")
    impl.scalar("evaluate", model, x, labels, 3)
    impl.rejects("evaluate", model, x, labels, 0)


@pytest.mark.requires("training")
def test_fit_raises_on_a_nan_loss_in_its_last_batch(impl: Impl) -> None:
    # one epoch of 4 batches; only the last holds a NaN pixel, so only its loss is NaN
    c = load_case("fit")
    y = impl.arr(c["y"], "int64")
    model = impl.call("dense_model", SMALL_LAYERS, [w.astype(impl.dtype) for w in c.weights()], 0)
    impl.call("fit", model, impl.arr(c["x"]), y, 1, 8, 0.5)
    x = c["x"].copy()
    x[-1, 0] = np.nan
    model = impl.call("dense_model", SMALL_LAYERS, [w.astype(impl.dtype) for w in c.weights()], 0)
    impl.rejects("fit", model, impl.arr(x), y, 1, 8, 0.5)


# -- fit's divergence rule -------------------------------------------------------------------
# A one-layer softmax model with W = [[1, 0], [0, 0]] and b = 0 sees x = (t, 0), so its
# logits are (t, 0): label 1 costs softplus(t) = log(1 + e^t), label 0 softplus(-t). With a
# learning rate of 1e-9 the weights stay put, so each batch's loss is set by its t alone.
# Batches of one sample, one epoch of 12: the rule looks at the mean of the last batches
# (10 at least) against half the ceiling, -log(1e-7) / 2 = 8.06, and 1.5 x the first loss.


def _fit_steady(impl: Impl, first: tuple[float, int], rest: tuple[float, int]) -> Any:
    model = impl.call(
        "dense_model",
        [(2, 2, "softmax")],
        [np.array([[1.0, 0.0], [0.0, 0.0]], impl.dtype), np.zeros(2, impl.dtype)],
        0,
    )
    ts = np.array([first[0]] + [rest[0]] * 11)
    x = impl.arr(np.stack([ts, np.zeros(12)], axis=1))
    y = impl.arr(np.array([first[1]] + [rest[1]] * 11), "int64")
    return model, x, y


def _softplus(t: float) -> float:
    return math.log1p(math.exp(t))


@pytest.mark.requires("training")
@pytest.mark.parametrize(
    ("first", "rest", "mean"),
    [((12.0, 1), (12.0, 1), _softplus(12.0)), ((12.0, 0), (6.5, 1), _softplus(6.5))],
    ids=["12_from_the_start", "6.5_after_an_easy_first_batch"],
)
def test_fit_does_not_call_a_steady_run_divergent(
    impl: Impl, first: tuple[float, int], rest: tuple[float, int], mean: float
) -> None:
    # 12 from the start: high, but not 1.5 x the first loss. 6.5 after a first loss of
    # 6e-6: 1e6 x the first, but below half the ceiling.
    model, x, y = _fit_steady(impl, first, rest)
    losses = impl.call("fit", model, x, y, 1, 1, 1e-9)
    got = [float(v) for v in losses[0]]
    check_equal(impl, len(got), 12, what="batches of one epoch of 12 samples at batch_size 1")
    check_close(
        impl,
        np.array(got[1:]),
        np.full(11, mean),
        rtol=1e-5,
        atol=1e-5,
        expect_dtype="float64",
        what="the losses after the first of a model that does not move (learning rate 1e-9)",
    )


@pytest.mark.requires("training")
def test_fit_raises_when_the_loss_climbs_to_1_8_times_a_high_first_loss(impl: Impl) -> None:
    # first loss softplus(5.5) = 5.50, then softplus(10) = 10.00: above 8.06 and 1.82 x
    model, x, y = _fit_steady(impl, (12.0, 1), (12.0, 1))
    impl.call("fit", model, x, y, 1, 1, 1e-9)
    model, x, y = _fit_steady(impl, (5.5, 1), (10.0, 1))
    impl.rejects("fit", model, x, y, 1, 1, 1e-9)


@pytest.mark.requires("training")
def test_fit_raises_when_a_learning_rate_of_100_drives_the_loss_to_the_ceiling(
    impl: Impl,
) -> None:
    c = load_case("fit")
    x, y = impl.arr(c["x"]), impl.arr(c["y"], "int64")
    model = impl.call("dense_model", SMALL_LAYERS, [w.astype(impl.dtype) for w in c.weights()], 0)
    impl.call("fit", model, x, y, 1, 1, 0.5)
    model = impl.call("dense_model", SMALL_LAYERS, [w.astype(impl.dtype) for w in c.weights()], 0)
    impl.rejects("fit", model, x, y, 1, 1, 100.0)
