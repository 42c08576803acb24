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
    """The golden case, its starting weights in the grade's dtype, and a fresh model of them."""
    c = load_case(case)
    ws = [w.astype(impl.dtype) for w in c.weights()]
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
    c, _, model = _small_model(impl, "fit")
    x, y = impl.arr(c["x"]), c["y"].astype(np.int64)
    impl.call("fit", model, x, impl.arr(y, "int64"), 1, 8, 0.5)
    _, ws, model = _small_model(impl, "fit")
    bad = y.copy()
    bad[-1] = last
    impl.rejects("fit", model, x, impl.arr(bad.astype(dtype), dtype), 1, 8, 0.5)
    _check_unchanged(impl, model, ws, f"fit refused labels ending in {last} ({dtype})")


def test_loss_rejects_float_labels(impl: Impl) -> None:
    # labels 0.0 and 2.0 cast to integers would give a loss (Keras casts them): a library
    # that checks refuses them, class indices must be integers
    p = impl.arr(np.full((2, 3), 1 / 3))
    impl.run("sparse_categorical_crossentropy", impl.arr(np.array([0, 2]), "int64"), p)
    impl.rejects("sparse_categorical_crossentropy", impl.arr(np.array([0.0, 2.0]), "float64"), p)


@pytest.mark.requires("training")
def test_update_weights_rejects_gradients_and_weights_of_unequal_length(impl: Impl) -> None:
    # the book's zip(gradients, weights) silently stops at the shorter one
    c, _, model = _small_model(impl, "model_gradients")
    grads = [impl.arr(c[f"g{i}"]) for i in range(4)]
    impl.call("update_weights", grads, impl.call("model_weights", model), 0.25)
    impl.rejects("update_weights", grads[:3], impl.call("model_weights", model), 0.25)


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
    c, _, model = _small_model(impl, "fit")
    y = impl.arr(c["y"], "int64")
    impl.call("fit", model, impl.arr(c["x"]), y, 1, 8, 0.5)
    x = c["x"].copy()
    x[-1, 0] = np.nan
    _, _, model = _small_model(impl, "fit")
    impl.rejects("fit", model, impl.arr(x), y, 1, 8, 0.5)


# -- fit's divergence rule -------------------------------------------------------------------
# A one-layer softmax model with W = [[1, 0], [0, 0]] and b = 0 sees x = (t, 0), so its
# logits are (t, 0) and label 1 costs softplus(t) = log(1 + e^t): t = log(e^L - 1) costs L.
# With a learning rate of 1e-9 the weights stay put, so batches of one sample have exactly
# the losses asked for. The rule (README, "input_checks"): at batch 0, every 100 batches
# and the epoch's last batch, the mean of the losses since the previous check, widened to
# the last 10 at least, must not reach both 8.06 (half the ceiling) and 1.5 x the first.


def _frozen_run(impl: Impl, losses: list[float]) -> Any:
    """A model that does not move at learning rate 1e-9, and data of these batch losses."""
    model = impl.call(
        "dense_model",
        [(2, 2, "softmax")],
        [np.array([[1.0, 0.0], [0.0, 0.0]], impl.dtype), np.zeros(2, impl.dtype)],
        0,
    )
    t = np.log(np.expm1(np.array(losses)))
    x = impl.arr(np.stack([t, np.zeros_like(t)], axis=1))
    return model, x, impl.arr(np.ones(len(t), dtype=np.int64), "int64")


@pytest.mark.requires("training")
@pytest.mark.parametrize(
    "losses",
    [[12.0] * 12, [6e-6] + [6.5] * 11],
    ids=["12_from_the_start", "6.5_after_a_first_loss_of_6e-6"],
)
def test_fit_does_not_call_a_steady_run_divergent(impl: Impl, losses: list[float]) -> None:
    # 12 from the start: high, but not 1.5 x the first loss. 6.5 after a first loss of
    # 6e-6: 1e6 x the first, but below half the ceiling.
    model, x, y = _frozen_run(impl, losses)
    out = impl.call("fit", model, x, y, 1, 1, 1e-9)
    got = [float(v) for v in out[0]]
    check_close(
        impl,
        np.array(got),
        np.array(losses),
        rtol=1e-5,
        atol=1e-5,
        expect_dtype="float64",
        what="the batch losses of a model that does not move (learning rate 1e-9)",
    )


@pytest.mark.requires("training")
@pytest.mark.parametrize(
    "losses",
    [
        [5.5] + [10.0] * 11,
        [0.3] * 95 + [14.0] * 6 + [0.3] * 4,
        [0.3] + [12.0] * 100 + [0.3] * 99,
    ],
    ids=[
        "10_after_a_first_loss_of_5.5",
        "14_in_6_of_the_last_10_steps",
        "12_until_the_check_at_step_100",
    ],
)
def test_fit_raises_when_the_loss_diverges(impl: Impl, losses: list[float]) -> None:
    # 10 after 5.5: above 8.06, and 1.82 x the first loss.
    # 105 batches, 14 at batches 95-100: the check at batch 100 averages batches 1-100
    # (1.12), but the last one, at batch 104, looks back 10 batches: (6 x 14 + 4 x 0.3) / 10
    # = 8.52 (over 11 batches it would be 7.77). 200 batches, 12 at batches 1-100: the check
    # at batch 100 sees 12; by the last batch the mean since batch 1 would be down to 6.2.
    model, x, y = _frozen_run(impl, [12.0] * 12)
    impl.call("fit", model, x, y, 1, 1, 1e-9)
    model, x, y = _frozen_run(impl, losses)
    impl.rejects("fit", model, x, y, 1, 1, 1e-9)


@pytest.mark.requires("training")
@pytest.mark.parametrize(
    ("epochs", "batch_size"), [(1, 1), (3, 30)], ids=["30_steps_of_1", "3_epochs_of_1_step"]
)
def test_fit_raises_when_a_learning_rate_of_100_drives_the_loss_to_the_ceiling(
    impl: Impl, epochs: int, batch_size: int
) -> None:
    # 30 samples. In epochs of one step the only check of epoch 1 is at its batch 0, on a
    # loss of 11.3 (the first was 1.66): the window there is that one batch.
    c, _, model = _small_model(impl, "fit")
    x, y = impl.arr(c["x"]), impl.arr(c["y"], "int64")
    impl.call("fit", model, x, y, epochs, batch_size, 0.5)
    _, _, model = _small_model(impl, "fit")
    impl.rejects("fit", model, x, y, epochs, batch_size, 100.0)
