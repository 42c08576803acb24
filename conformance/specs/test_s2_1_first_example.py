"""§2.1 A first look: MNIST facts, preprocessing, Keras init and RMSprop, the trained model."""

from __future__ import annotations

import math

import numpy as np
import pytest

from conformance.data import mnist_or_skip
from conformance.golden import load_case
from conformance.harness import Impl, check, check_close, check_equal

pytestmark = pytest.mark.section("2.1")


def _digits(n: int = 5) -> np.ndarray:
    images = np.random.default_rng(21).integers(0, 256, (n, 28, 28)).astype(np.uint8)
    images[0, 0, :2] = (0, 255)  # both ends of the pixel range
    return images


def test_preprocess_reshapes_to_n_by_784_float32_divided_by_255(impl: Impl) -> None:
    images = _digits()
    t = impl.arr(images, "uint8")
    out = impl.run("preprocess", t)
    check_equal(impl, out.shape, (5, 784), what="preprocess shape (N, 28 * 28)")
    check_equal(impl, str(out.dtype), "float32", what="preprocess dtype (the book's astype)")
    # the book's images.reshape((N, 28 * 28)).astype("float32") / 255, bit for bit
    expected = images.reshape(5, 784).astype("float32") / 255
    check_close(
        impl, out, expected, what="preprocessed pixels", rtol=0, atol=0, expect_dtype="float32"
    )
    check_equal(impl, (float(out.min()), float(out.max())), (0.0, 1.0), what="pixel range")
    check_equal(impl, impl.to_np(t), images, what="preprocess must leave its input untouched")


def test_preprocess_rejects_images_that_are_not_28_by_28(impl: Impl) -> None:
    impl.run("preprocess", impl.arr(_digits(3), "uint8"))
    impl.rejects("preprocess", impl.arr(np.zeros((5, 28, 27), dtype=np.uint8), "uint8"))


@pytest.mark.requires("keras_init")
def test_glorot_uniform_limits(impl: Impl) -> None:
    for fan_in, fan_out in ((784, 512), (512, 10)):
        w = impl.run("glorot_uniform", fan_in, fan_out, 0).astype(np.float64)
        limit = math.sqrt(6 / (fan_in + fan_out))
        check_equal(impl, w.shape, (fan_in, fan_out), what="glorot_uniform shape")
        check(
            impl,
            np.abs(w).max() <= limit and np.abs(w).max() > 0.95 * limit,
            f"glorot_uniform({fan_in}, {fan_out}) must fill (-{limit:.5f}, {limit:.5f}); "
            f"max |w| = {np.abs(w).max():.5f}",
        )
        check(
            impl,
            abs(w.std() - limit / math.sqrt(3)) < 0.05 * limit,
            f"std {w.std():.5f} is not that of U(-limit, limit), {limit / math.sqrt(3):.5f}",
        )
    again = impl.run("glorot_uniform", 784, 512, 0)
    other = impl.run("glorot_uniform", 784, 512, 1)
    check_equal(impl, again, impl.run("glorot_uniform", 784, 512, 0), what="the same seed, twice")
    check(impl, not np.array_equal(again, other), "seeds 0 and 1 must give different kernels")


@pytest.mark.requires("rmsprop")
def test_rmsprop_keras_defaults(impl: Impl) -> None:
    c = load_case("rmsprop")
    w, s = c["w0"], np.zeros(3)
    for k, g in enumerate(c["grads"]):
        args = (impl.arr(w), impl.arr(g), impl.arr(s))
        before = [impl.to_np(a).copy() for a in args]
        tw, ts = impl.call("rmsprop_step", *args)
        for name, a, b in zip(("w", "g", "state"), args, before, strict=True):
            check_equal(
                impl, impl.to_np(a), b, what=f"rmsprop_step must not change its {name} input"
            )
        w, s = impl.to_np(tw).astype(np.float64), impl.to_np(ts).astype(np.float64)
        check_close(
            impl,
            impl.to_np(tw),
            c["path"][k],
            kind="grad",
            what=f"RMSprop (lr 1e-3, rho 0.9, eps 1e-7 outside the sqrt) step {k + 1}",
        )
    check_close(
        impl,
        np.asarray(s, dtype=impl.dtype),
        c["final_state"],
        kind="grad",
        what="RMSprop mean square after 10 steps",
    )


@pytest.mark.mnist
@pytest.mark.slow
@pytest.mark.requires("mnist_training")
def test_trained_first_example_predicts_distributions(impl: Impl) -> None:
    (train_images, train_labels), (test_images, test_labels) = mnist_or_skip()
    x = (train_images[:6000].reshape(6000, 784).astype("float32") / 255).astype(impl.dtype)
    model = impl.call(
        "train_first_example",
        impl.arr(x),
        impl.arr(train_labels[:6000].astype(np.int64), "int64"),
        1,
        128,
        0,
    )
    tx = (test_images[:1000].reshape(1000, 784).astype("float32") / 255).astype(impl.dtype)
    probs = impl.run("predict", model, impl.arr(tx))
    check_close(
        impl,
        probs.sum(axis=1),
        np.ones(1000),
        what="predictions sum to 1 per row",
        rtol=1e-5,
        atol=1e-5,
    )
    acc = float((probs.argmax(axis=1) == test_labels[:1000]).mean())
    check(impl, acc > 0.85, f"one epoch on 6,000 digits should exceed 0.85 accuracy, got {acc:.3f}")


@pytest.mark.erratum
def test_reshape_to_6000_rows_is_rejected(impl: Impl) -> None:
    # Erratum (review): train_images.reshape((6000, 28*28)); MNIST has 60,000 training images.
    images = impl.arr(np.zeros((60000, 28, 28), dtype=np.uint8), "uint8")
    check_equal(
        impl,
        impl.run("reshape", images, (60000, 28 * 28)).shape,
        (60000, 784),
        what="reshape of the training images",
    )
    impl.rejects("reshape", images, (6000, 28 * 28))
