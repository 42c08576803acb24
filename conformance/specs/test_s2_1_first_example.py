"""§2.1 A first look: MNIST facts, preprocessing, Keras init and RMSprop, the trained model."""

from __future__ import annotations

import math

import numpy as np
import pytest

from conformance.data import mnist_or_skip
from conformance.golden import load_case
from conformance.harness import Impl, check, check_close, check_equal

pytestmark = pytest.mark.section("2.1")


@pytest.mark.mnist
def test_mnist_arrays() -> None:
    (train_images, train_labels), (test_images, test_labels) = mnist_or_skip()
    assert train_images.shape == (60000, 28, 28) and train_images.dtype == np.uint8
    assert test_images.shape == (10000, 28, 28) and test_labels.shape == (10000,)
    assert train_labels[:3].tolist() == [5, 0, 4] and train_labels[-3:].tolist() == [5, 6, 8]
    assert test_labels[:3].tolist() == [7, 2, 1] and test_labels[-3:].tolist() == [4, 5, 6]
    assert int(train_labels[4]) == 9


@pytest.mark.mnist
def test_preprocessing(impl: Impl) -> None:
    (train_images, _), _ = mnist_or_skip()
    t = impl.arr(train_images[:1000], "uint8")
    flat = impl.run("reshape", t, (1000, 28 * 28))
    check_equal(impl, flat.shape, (1000, 784), what="train_images.reshape((N, 28 * 28))")
    x = flat.astype("float32") / 255
    check(
        impl,
        x.dtype == np.float32 and x.min() >= 0 and x.max() <= 1,
        "preprocessed images are float32 in [0, 1]",
    )
    check_equal(impl, flat, train_images[:1000].reshape(1000, 784), what="reshape keeps row order")


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


@pytest.mark.requires("rmsprop")
def test_rmsprop_keras_defaults(impl: Impl) -> None:
    c = load_case("rmsprop")
    w, s = c["w0"], np.zeros(3)
    for k, g in enumerate(c["grads"]):
        tw, ts = impl.call("rmsprop_step", impl.arr(w), impl.arr(g), impl.arr(s))
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
