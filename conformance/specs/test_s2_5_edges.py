"""§2.5 edges found by mutation testing (conformance/MUTATION.md): one-sample batches and
evaluation, and batches of a size that does not divide the data."""

from __future__ import annotations

import numpy as np
import pytest

from conformance.golden import SMALL_LAYERS, load_case
from conformance.harness import Impl, check, check_close, check_equal

pytestmark = pytest.mark.section("2.5")


def test_batches_of_a_single_sample(impl: Impl) -> None:
    x = np.array([[7]], dtype=np.int64)
    y = np.array([3], dtype=np.int64)
    batches = impl.call("batches", impl.arr(x, "int64"), impl.arr(y, "int64"), 4)
    check_equal(impl, len(batches), 1, what="number of batches of 1 sample with batch_size 4")
    bx, by = batches[0]
    check_equal(impl, impl.to_np(bx), x, what="the one batch's images")
    check_equal(impl, impl.to_np(by), y, what="the one batch's labels")


def test_evaluate_a_single_sample(impl: Impl) -> None:
    c = load_case("dense_forward")
    model = impl.call(
        "dense_model", SMALL_LAYERS, [w.astype(impl.dtype) for w in c.weights("w")], 0
    )
    x = c["x"][:1]
    right = c["out"][:1].argmax(axis=1).astype(np.int64)
    wrong = (right + 1) % 4
    acc_right = impl.scalar("evaluate", model, impl.arr(x), impl.arr(right, "int64"))
    acc_wrong = impl.scalar("evaluate", model, impl.arr(x), impl.arr(wrong, "int64"))
    check(
        impl,
        (acc_right, acc_wrong) == (1.0, 0.0),
        f"evaluate on one sample: 1.0 with its label, 0.0 with another; got "
        f"{acc_right} and {acc_wrong}",
    )


def test_loss_on_logits_of_very_different_scales_per_row(impl: Impl) -> None:
    # logsumexp must be stabilised per row: a shift by the batch's largest logit sends the
    # second row's exponentials to 0 (log 0 = -inf). Expected values by hand:
    # row 0: logsumexp(1000, 999, 998) - 1000 = log(1 + e^-1 + e^-2)
    # row 1: logsumexp(-1000, -999, -1001) - (-1001) = 2 + log(1 + e^-1 + e^-2)
    z = np.array([[1000.0, 999.0, 998.0], [-1000.0, -999.0, -1001.0]])
    labels = np.array([0, 2], dtype=np.int64)
    out = impl.run(
        "sparse_categorical_crossentropy", impl.arr(labels, "int64"), impl.arr(z), from_logits=True
    )
    base = float(np.log1p(np.exp(-1.0) + np.exp(-2.0)))
    check_close(
        impl,
        out,
        np.array([base, 2.0 + base]),
        what="per-sample loss on logits of scale 1000 and -1000",
    )


def _softmax_rows(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_softmax_layer_stable_for_logits_of_scale_1000(impl: Impl) -> None:
    # One softmax layer; x = identity rows, so the logits are W's rows. Softmax must shift
    # each row by its own max: by the batch's max, row 1 underflows to 0 / 0.
    W = np.array([[1000.0, 999.0, 998.0], [-1000.0, -999.0, -1001.0]])
    model = impl.call(
        "dense_model", [(2, 3, "softmax")], [W.astype(impl.dtype), np.zeros(3, impl.dtype)], 0
    )
    out = impl.run("predict", model, impl.arr(np.eye(2)))
    e = np.exp([0.0, -1.0, -2.0])
    expected = np.array([e / e.sum(), e[[1, 0, 2]] / e.sum()])
    check_close(
        impl, out, expected, what="softmax of logits (1000, 999, 998), (-1000, -999, -1001)"
    )


@pytest.mark.requires("autodiff")
def test_model_gradients_through_a_softmax_with_98_clipped_classes(impl: Impl) -> None:
    # 100 classes, two likely, 98 with p ~ 1e-22 < 1e-7: the loss clips them (TF 2.6), so
    # sum(clip(p)) = 1 + 9.8e-6 and the softmax backward's sum(da * a) term is -9.8e-6, not 0.
    # Expected values by hand: dL/dp_j = (1/S - [j == y]/c_j) on unclipped p_j, else 0;
    # dz = a * (dL/dp - sum(dL/dp * a)); mean over the batch; dW = x.T dz, db = sum dz.
    W = np.full((2, 100), -50.0)
    W[0, :2] = [0.0, 0.0]
    W[1, :2] = [1.0, 0.0]
    b = np.zeros(100)
    x, y = np.eye(2), np.array([0, 1], dtype=np.int64)
    model = impl.call(
        "dense_model", [(2, 100, "softmax")], [W.astype(impl.dtype), b.astype(impl.dtype)], 0
    )
    grads = impl.run_many("model_gradients", model, impl.arr(x), impl.arr(y, "int64"))
    a = _softmax_rows(x @ W + b)
    c = np.clip(a, 1e-7, 1 - 1e-7)
    dp = np.repeat(1 / c.sum(axis=1, keepdims=True), 100, axis=1)
    dp[np.arange(2), y] -= 1 / c[np.arange(2), y]
    dp[(a < 1e-7) | (a > 1 - 1e-7)] = 0
    dz = a * (dp - (dp * a).sum(axis=1, keepdims=True)) / 2
    for got, want, name in zip(grads, [x.T @ dz, dz.sum(axis=0)], ["W", "b"], strict=True):
        check_close(impl, got, want, what=f"d loss / d {name}, 98 clipped classes", kind="grad")


def test_dense_model_keeps_float32_weights_in_a_float64_grade(impl: Impl) -> None:
    # Weights given in float32 stay float32 (W and b), and so does the prediction.
    c = load_case("dense_forward")
    ws = [w.astype(np.float32) for w in c.weights("w")]
    model = impl.call("dense_model", SMALL_LAYERS, ws, 0)
    got = [impl.to_np(w, f"weights[{i}]") for i, w in enumerate(impl.call("model_weights", model))]
    check_equal(
        impl,
        [str(w.dtype) for w in got],
        ["float32"] * 4,
        what="dtypes of model_weights after dense_model with float32 weights",
    )
    out = impl.run("predict", model, impl.arr(c["x"], "float32"))
    check_equal(impl, str(out.dtype), "float32", what="dtype of predict on float32 weights and x")


@pytest.mark.requires("autodiff")
def test_model_gradients_pass_nothing_back_through_a_hidden_input_of_zero(impl: Impl) -> None:
    # All first-layer weights 0: every relu input is exactly 0, where relu'(0) = 0 (TF, torch
    # and the book's `z > 0`), so the first layer gets no gradient. The softmax of (0, 0) is
    # (0.5, 0.5); with label 0 the last bias gets (0.5 - 1, 0.5) by hand.
    W2 = np.array([[1.0, 2.0], [3.0, -1.0]])
    ws = [np.zeros((2, 2)), np.zeros(2), W2, np.zeros(2)]
    model = impl.call(
        "dense_model", [(2, 2, "relu"), (2, 2, "softmax")], [w.astype(impl.dtype) for w in ws], 0
    )
    grads = impl.run_many(
        "model_gradients", model, impl.arr(np.array([[1.0, 2.0]])), impl.arr([0], "int64")
    )
    expected = [np.zeros((2, 2)), np.zeros(2), np.zeros((2, 2)), np.array([-0.5, 0.5])]
    for i, (got, want) in enumerate(zip(grads, expected, strict=True)):
        check_close(impl, got, want, what=f"gradient {i} with every relu input at 0", kind="grad")


@pytest.mark.requires("autodiff")
def test_loss_gradient_passes_at_the_clip_bounds(impl: Impl) -> None:
    # TF 2.6 clips p to [1e-7, 1 - 1e-7] and passes the gradient where p lies inside, bounds
    # included; p = 0 is outside. By hand, with S = sum(clip(p)) and n = 2 rows:
    # d/dp_j = (1/S - [j == y] / clip(p)_j) / n inside, 0 outside.
    eps = 1e-7
    p = np.array([[1.0 - eps, eps, 0.0], [eps, 0.5, 0.5 - eps]])
    labels = np.array([0, 1], dtype=np.int64)
    s0, s1 = (1.0 - eps) + eps + eps, eps + 0.5 + (0.5 - eps)
    expected = (
        np.array(
            [
                [1 / s0 - 1 / (1.0 - eps), 1 / s0, 0.0],
                [1 / s1, 1 / s1 - 1 / 0.5, 1 / s1],
            ]
        )
        / 2
    )
    out = impl.run("loss_gradient", impl.arr(labels, "int64"), impl.arr(p))
    check_close(impl, out, expected, what="loss gradient at p = 1e-7 and p = 1 - 1e-7", kind="grad")


@pytest.mark.requires("random_init")
def test_dense_model_same_seed_same_weights_other_seed_other_weights(impl: Impl) -> None:
    def draw(seed: int) -> list[np.ndarray]:
        model = impl.call("dense_model", [(6, 5, "relu"), (5, 4, "softmax")], None, seed)
        return [impl.to_np(w) for w in impl.call("model_weights", model)]

    a, b, c = draw(11), draw(11), draw(12)
    check(
        impl,
        all(np.array_equal(x, y) for x, y in zip(a, b, strict=True)),
        "dense_model with seed 11 twice must draw the same weights",
    )
    check(
        impl,
        not np.array_equal(a[0], c[0]) and not np.array_equal(a[2], c[2]),
        "dense_model with seeds 11 and 12 drew the same W",
    )


@pytest.mark.requires("autodiff")
def test_loss_gradient_on_logits_by_hand(impl: Impl) -> None:
    # d mean loss / d z = (softmax(z) - onehot(y)) / n, per row. Each row's softmax is exact
    # by hand (log 2 makes one logit twice as likely), and the rows' scales differ by 1000,
    # so a softmax shifted by the batch's largest logit (not each row's) gives NaN or 0:
    # row 0: softmax(0, log 2, 0) = (1/4, 1/2, 1/4), label 1 -> (1/4, -1/2, 1/4)
    # row 1: softmax(-500, -500, -500 + log 2) = (1/4, 1/4, 1/2), label 0 -> (-3/4, 1/4, 1/2)
    # row 2: softmax(500 + log 2, 500, 500) = (1/2, 1/4, 1/4), label 2 -> (1/2, 1/4, -3/4)
    ln2 = float(np.log(2.0))
    z = np.array([[0.0, ln2, 0.0], [-500.0, -500.0, -500.0 + ln2], [500.0 + ln2, 500.0, 500.0]])
    labels = np.array([1, 0, 2], dtype=np.int64)
    expected = np.array([[0.25, -0.5, 0.25], [-0.75, 0.25, 0.5], [0.5, 0.25, -0.75]]) / 3
    tz, tl = impl.arr(z), impl.arr(labels, "int64")
    out = impl.run("loss_gradient", tl, tz, from_logits=True)
    # float32 holds 500 + log 2 to within 3e-5, so the softmax's absolute error follows it
    check_close(
        impl,
        out,
        expected,
        kind="grad",
        what="(softmax(z) - onehot(y)) / n for logits of scales 0, -500 and 500",
        atol=2e-5 if impl.dtype == "float32" else None,
    )
    check_equal(impl, impl.to_np(tz), z.astype(impl.dtype), what="loss_gradient keeps z")
    check_equal(impl, impl.to_np(tl), labels, what="loss_gradient keeps the labels")


@pytest.mark.requires("random_init")
def test_chapter_model_same_seed_same_weights_other_seed_other_weights(impl: Impl) -> None:
    # §2.5.1's model, 784 -> 512 (relu) -> 10 (softmax), drawn from the seed: both layers
    # from it (not from a global generator), and all four weights in one dtype
    layers = [(784, 512, "relu"), (512, 10, "softmax")]

    def draw(seed: int) -> list[np.ndarray]:
        model = impl.call("dense_model", layers, None, seed)
        return [impl.to_np(w) for w in impl.call("model_weights", model)]

    a, b, c = draw(3), draw(3), draw(4)
    check_equal(
        impl, [w.shape for w in a], [(784, 512), (512,), (512, 10), (10,)], what="weight shapes"
    )
    check_equal(impl, len({str(w.dtype) for w in a}), 1, what="number of weight dtypes")
    for i in (0, 2):
        check(impl, np.array_equal(a[i], b[i]), f"seed 3 twice must draw the same weights[{i}]")
        check(impl, not np.array_equal(a[i], c[i]), f"seeds 3 and 4 drew the same weights[{i}]")


@pytest.mark.requires("single_sample")
def test_predict_of_one_sample_as_a_vector_gives_its_row(impl: Impl) -> None:
    c = load_case("dense_forward")
    model = impl.call(
        "dense_model", SMALL_LAYERS, [w.astype(impl.dtype) for w in c.weights("w")], 0
    )
    x = impl.arr(c["x"][3])
    out = impl.run("predict", model, x)
    check_close(impl, out, c["out"][3], what="predict of sample 3 given as a vector (6,)")
    check_equal(impl, impl.to_np(x), c["x"][3].astype(impl.dtype), what="predict's input")
