"""§2.4 edges found by mutation testing (conformance/MUTATION.md): the scalar graph's other
sign, GradientTape's dense gradients for a non-square batch in float32, the momentum range and
an SGD path that overflows."""

from __future__ import annotations

import numpy as np
import pytest

from conformance import curves
from conformance.harness import Impl, check, check_close, check_equal

pytestmark = pytest.mark.section("2.4")


@pytest.mark.requires("autodiff")
@pytest.mark.parametrize(
    ("x", "w", "b", "y_true", "grads"),
    [
        # x2 = x * w + b = 2 < y_true = 4: loss = y_true - x2, so d/dw = -x, d/db = -1
        (2.0, 1.0, 0.0, 4.0, (-2.0, -1.0)),
        # x2 = 1 * 1 + 2 = 3 > 2.5, but x * w - b = -1 < 2.5: the sign tells + from -
        (1.0, 1.0, 2.0, 2.5, (1.0, 1.0)),
        # x2 = 3 * -2 + 0.5 = -5.5 < 1: d/dw = -x = -3
        (3.0, -2.0, 0.5, 1.0, (-3.0, -1.0)),
        # x = 0.1 has no exact float32: d/dw = -0.1 exactly only in float64 arithmetic
        (0.1, 3.0, 1.0, 4.0, (-0.1, -1.0)),
        # x2 = 1 + 0.1 = 1.1 < 1.1000000001 in float64; with b in float32 (0.10000000149)
        # x2 would pass y_true and flip the sign
        (1.0, 1.0, 0.1, 1.1000000001, (-1.0, -1.0)),
    ],
    ids=["below_target", "b_decides_the_sign", "negative_w", "x_not_a_float32", "b_float64"],
)
def test_computation_graph_gradients_on_both_sides_of_the_target(
    impl: Impl, x: float, w: float, b: float, y_true: float, grads: tuple[float, float]
) -> None:
    gw, gb = impl.call("gradient_scalar_graph", x, w, b, y_true)
    got = (float(gw), float(gb))
    check(
        impl,
        got == grads,
        f"gradient_scalar_graph({x}, {w}, {b}, {y_true}): loss = |y_true - (x*w + b)| has "
        f"(d/dw, d/db) = {grads}, got {got}",
    )


@pytest.mark.requires("autodiff")
def test_gradient_tape_dense_non_square_batch_float32(impl: Impl) -> None:
    rng = np.random.default_rng(41)
    x = rng.uniform(-1, 1, (3, 5)).astype(np.float32)
    W = rng.uniform(-1, 1, (5, 2)).astype(np.float32)
    b = np.zeros(2, dtype=np.float32)
    gw, gb = impl.run_many(
        "gradient_dense", impl.arr(x, "float32"), impl.arr(W, "float32"), impl.arr(b, "float32")
    )
    # d sum(xW + b) / dW[i, j] = sum_k x[k, i]; d / db[j] = number of rows (3, not 5)
    expected_w = np.repeat(x.astype(np.float64).sum(axis=0)[:, None], 2, axis=1)
    check_close(
        impl,
        gw,
        expected_w.astype(np.float32),
        what="grad of sum(xW+b) wrt W, x of shape (3, 5), float32",
        expect_dtype="float32",
        rtol=1e-5,
        atol=1e-6,
    )
    check_close(
        impl,
        gb,
        np.full(2, 3.0, dtype=np.float32),
        what="grad of sum(xW+b) wrt b, 3 rows, float32",
        expect_dtype="float32",
        rtol=0,
        atol=0,
    )


@pytest.mark.requires("momentum")
@pytest.mark.parametrize("rule", ["keras", "nesterov"])
def test_momentum_step_at_momentum_0_and_1_and_rejects_outside(impl: Impl, rule: str) -> None:
    # Keras 2.6's SGD raises ValueError for a momentum outside [0, 1]
    w, g, v = (
        impl.arr(np.array([1.0, -2.0])),
        impl.arr(np.array([0.5, 1.0])),
        impl.arr(np.array([0.25, -0.5])),
    )
    # both bounds are valid. By hand, lr 0.1: v' = m v - 0.1 g; w' = w + v' (Keras) or
    # w + m v' - 0.1 g (Nesterov). m = 0: v' = (-0.05, -0.1), w' = (0.95, -2.1) either way;
    # m = 1: v' = (0.2, -0.6), w' = (1.2, -2.6) (Keras) or (1.15, -2.7) (Nesterov).
    expected = {
        0.0: ([0.95, -2.1], [0.95, -2.1], [-0.05, -0.1]),
        1.0: ([1.2, -2.6], [1.15, -2.7], [0.2, -0.6]),
    }
    for m, (keras_w, nesterov_w, velocity) in expected.items():
        tw, tv = impl.call("momentum_step", w, g, v, 0.1, m, rule)
        want = keras_w if rule == "keras" else nesterov_w
        check_close(impl, impl.to_np(tw), np.array(want), what=f"w after a step of momentum {m}")
        check_close(impl, impl.to_np(tv), np.array(velocity), what=f"velocity, momentum {m}")
    impl.rejects("momentum_step", w, g, v, 0.1, 1.5, rule)
    impl.rejects("momentum_step", w, g, v, 0.1, -0.1, rule)


@pytest.mark.requires("momentum")
def test_sgd_path_that_overflows_still_gives_steps_plus_1_positions(impl: Impl) -> None:
    # w -= 1e200 * 2w from 5: -1e201, then 2e401 overflows to inf; after that the path stays
    # non-finite (inf, or NaN from inf - inf), and it still has steps + 1 positions.
    path = impl.run("sgd_path", curves.square_grad, 5.0, 1e200, 6).astype(np.float64)
    check_equal(impl, path.shape, (7,), what="sgd_path of 6 steps that overflows: 7 positions")
    check_close(
        impl,
        path[:2],
        np.array([5.0, 5.0 - 1e200 * (2 * 5.0)]),
        what="the two finite positions",
        rtol=1e-15,
        atol=0,
        expect_dtype="float64",
    )
    check(
        impl,
        not np.isfinite(path[2:]).any(),
        f"from the overflow on, every position must be inf or NaN, got {path[2:].tolist()}",
    )
