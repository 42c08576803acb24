"""Statistical specs for the random parts, with fixed seeds and stated false-alarm rates."""

from __future__ import annotations

import math

import numpy as np
import pytest

from conformance.harness import Impl, check, check_equal

ALPHA = 1e-3  # false-alarm rate of each test, for a correct implementation


def ks_uniform(sample: np.ndarray, lo: float, hi: float) -> tuple[float, float]:
    """Kolmogorov-Smirnov distance to U[lo, hi) and its critical value at ALPHA."""
    x = np.sort((sample.astype(np.float64) - lo) / (hi - lo))
    n = len(x)
    cdf = np.clip(x, 0, 1)
    d = max(np.max(np.arange(1, n + 1) / n - cdf), np.max(cdf - np.arange(n) / n))
    critical = math.sqrt(-math.log(ALPHA / 2) / 2) / math.sqrt(n)
    return float(d), critical


@pytest.mark.section("2.5")
@pytest.mark.requires("random_init")
def test_naive_dense_w_is_uniform_0_to_0_1(impl: Impl) -> None:
    model = impl.call("dense_model", [(784, 64, "relu")], None, 12345)
    w = impl.to_np(impl.call("model_weights", model)[0], "W")
    check_equal(impl, w.shape, (784, 64), what="W of NaiveDense(784, 64)")
    # 2nd edition: tf.random.uniform(minval=0, maxval=1e-1); 3rd edition: keras.Variable(
    # initializer="uniform"), Keras' RandomUniform(-0.05, 0.05). Either edition's draw.
    low, high = (0.0, 0.1) if w.min() >= 0 else (-0.05, 0.05)
    d, critical = ks_uniform(w.ravel(), low, high)
    check(
        impl,
        d < critical,
        f"KS distance of W to U[{low:g}, {high:g}) is {d:.5f} > {critical:.5f} (alpha {ALPHA}, "
        f"n {w.size}): W is drawn neither like tf.random.uniform(minval=0, maxval=0.1) (2nd "
        f"edition) nor like Keras' 'uniform' initializer, U[-0.05, 0.05) (3rd edition)",
    )


@pytest.mark.section("2.1")
@pytest.mark.requires("keras_init")
def test_glorot_uniform_distribution(impl: Impl) -> None:
    w = impl.run("glorot_uniform", 784, 512, 2024)
    check_equal(impl, w.shape, (784, 512), what="glorot_uniform(784, 512) shape")
    limit = math.sqrt(6 / (784 + 512))
    d, critical = ks_uniform(w.ravel(), -limit, limit)
    check(
        impl,
        d < critical,
        f"KS distance to U(-{limit:.5f}, {limit:.5f}) is {d:.5f} > {critical:.5f} (alpha {ALPHA})",
    )


@pytest.mark.section("2.5")
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_shuffle_is_a_permutation(impl: Impl, seed: int) -> None:
    x = np.arange(1000, dtype=np.int64)
    batches = impl.call("batches", impl.arr(x, "int64"), impl.arr(x, "int64"), 100, True, seed)
    got = np.concatenate([impl.to_np(b[0]) for b in batches])
    check(impl, np.array_equal(np.sort(got), x), "shuffled batches must be a permutation")
    # a uniform permutation leaves ~1 fixed point; 50 or more has probability far below ALPHA
    check(impl, int((got == x).sum()) < 50, "the shuffle leaves too many samples in place")
