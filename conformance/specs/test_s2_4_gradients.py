"""§2.4 Gradient-based optimization: slopes, SGD, momentum, the chain rule, backprop, tapes."""

from __future__ import annotations

import numpy as np
import pytest

from conformance import curves
from conformance.golden import load_case
from conformance.harness import Impl, check, check_close, check_equal

pytestmark = pytest.mark.section("2.4")


def _small(impl: Impl):  # type: ignore[no-untyped-def]
    c = load_case("model_gradients")
    model = impl.call(
        "dense_model",
        [(6, 5, "relu"), (5, 4, "softmax")],
        [w.astype(impl.dtype) for w in c.weights()],
        0,
    )
    return c, model


@pytest.mark.requires("autodiff")
def test_derivative_is_the_local_slope(impl: Impl) -> None:
    """The gradient entry equals the finite-difference slope of the loss along that weight."""
    c, model = _small(impl)
    x, y = impl.arr(c["x"]), impl.arr(c["y"], "int64")
    grads = impl.run_many("model_gradients", model, x, y)
    weights = c.weights()
    h = 1e-6 if impl.dtype == "float64" else 1e-2
    for k, idx in ((0, (2, 3)), (2, (1, 0)), (3, (2,))):

        def loss_at(delta: float, k: int = k, idx: tuple[int, ...] = idx) -> float:
            ws = [w.copy() for w in weights]
            ws[k][idx] += delta
            m = impl.call(
                "dense_model",
                [(6, 5, "relu"), (5, 4, "softmax")],
                [w.astype(impl.dtype) for w in ws],
                0,
            )
            p = impl.call("predict", m, x)
            return float(np.mean(impl.to_np(impl.call("sparse_categorical_crossentropy", y, p))))

        slope = (loss_at(h) - loss_at(-h)) / (2 * h)
        tol = 1e-6 if impl.dtype == "float64" else 2e-2
        check(
            impl,
            abs(grads[k][idx] - slope) <= tol * max(1.0, abs(slope)),
            f"gradient of weights[{k}]{list(idx)} = {grads[k][idx]:.6g} but the local slope is "
            f"{slope:.6g}",
        )


@pytest.mark.requires("autodiff")
def test_gradient_has_the_shape_of_w(impl: Impl) -> None:
    c, model = _small(impl)
    grads = impl.run_many("model_gradients", model, impl.arr(c["x"]), impl.arr(c["y"], "int64"))
    check_equal(
        impl,
        [g.shape for g in grads],
        [w.shape for w in c.weights()],
        what="gradient shapes vs weight shapes",
    )


@pytest.mark.requires("training")
def test_one_small_sgd_step_lowers_the_loss(impl: Impl) -> None:
    c, model = _small(impl)
    x, y = impl.arr(c["x"]), impl.arr(c["y"], "int64")
    before = impl.scalar("training_step", model, x, y, 0.01)
    after = float(
        np.mean(
            impl.to_np(
                impl.call("sparse_categorical_crossentropy", y, impl.call("predict", model, x))
            )
        )
    )
    check(impl, after < before, f"loss after one step {after:.6g} is not below {before:.6g}")


def _path(impl: Impl, grad, w0: float, lr: float, steps: int, **kw) -> np.ndarray:  # type: ignore[no-untyped-def]
    path = impl.run("sgd_path", grad, w0, lr, steps, **kw).astype(np.float64)
    check_equal(
        impl, path.shape, (steps + 1,), what=f"sgd_path of {steps} steps: steps + 1 positions"
    )
    check_equal(impl, float(path[0]), w0, what="sgd_path starts at w0")
    return path


@pytest.mark.requires("momentum")
def test_sgd_path_on_a_curve_converges_crawls_diverges(impl: Impl) -> None:
    good = _path(impl, curves.square_grad, 5.0, 0.1, 100)
    check_close(
        impl,
        good[:4],
        np.array([5.0, 4.0, 3.2, 2.56]),
        what="w -= 0.1 * 2w from 5",
        rtol=1e-15,
        atol=0,
        expect_dtype="float64",
    )
    tiny = _path(impl, curves.square_grad, 5.0, 1e-4, 100)
    big = _path(impl, curves.square_grad, 5.0, 1.1, 100)
    check(impl, abs(good[-1]) < 1e-6, f"lr 0.1 should converge to 0 on w**2, ended at {good[-1]}")
    check(impl, 4.9 < tiny[-1] < 5.0, f"lr 1e-4 should crawl (4.9 < w < 5), ended at {tiny[-1]}")
    check(impl, not abs(big[-1]) < 1e6, f"lr 1.1 should diverge, ended at {big[-1]}")
    check_close(
        impl,
        big[:3],
        np.array([5.0, -6.0, 7.2]),
        what="lr 1.1 overshoots",
        rtol=1e-15,
        atol=0,
        expect_dtype="float64",
    )


@pytest.mark.requires("momentum")
def test_sgd_path_stops_in_the_local_minimum_and_momentum_rolls_to_the_global(impl: Impl) -> None:
    plain = _path(impl, curves.local_global_grad, 2.5, 0.01, 1500)
    rolling = _path(impl, curves.local_global_grad, 2.5, 0.01, 1500, momentum=0.9)
    check(
        impl,
        abs(plain[-1] - curves.LOCAL_MINIMUM) < 1e-4,
        f"plain SGD should stop at 1.332: {plain[-1]}",
    )
    check(
        impl,
        abs(rolling[-1] - curves.GLOBAL_MINIMUM) < 1e-4,
        f"momentum 0.9 should reach the global minimum -1.484: {rolling[-1]}",
    )


@pytest.mark.requires("momentum")
@pytest.mark.parametrize("nesterov", [False, True])
def test_sgd_path_with_momentum_matches_keras_velocity_rule(impl: Impl, nesterov: bool) -> None:
    path = _path(impl, curves.square_grad, 1.0, 0.1, 3, momentum=0.5, nesterov=nesterov)
    # v = 0.5 v - 0.1 g; w += v (plain) or w += 0.5 v - 0.1 g (Nesterov), g = 2w, by hand
    expected = [1.0, 0.7, 0.44, 0.248] if nesterov else [1.0, 0.8, 0.54, 0.302]
    check_close(
        impl,
        path,
        np.array(expected),
        what=f"momentum 0.5, nesterov={nesterov}",
        rtol=1e-14,
        atol=0,
        expect_dtype="float64",
    )


@pytest.mark.requires("momentum")
@pytest.mark.parametrize("rule", ["book", "keras", "nesterov"])
def test_momentum_rules_over_20_steps(impl: Impl, rule: str) -> None:
    c = load_case(f"momentum_{rule}")
    w, v = c["w0"], np.zeros(3)
    for k in range(20):
        args = (impl.arr(w), impl.arr(c["curvature"] * w), impl.arr(v))
        tw, tv = impl.call("momentum_step", *args, 0.05, 0.9, rule)
        check_equal(
            impl, impl.to_np(args[0]), w.astype(impl.dtype), what="momentum_step must not change w"
        )
        w, v = impl.to_np(tw).astype(np.float64), impl.to_np(tv).astype(np.float64)
        check_close(
            impl,
            impl.to_np(tw),
            c["path"][k],
            what=f"{rule} momentum, w after step {k + 1}",
            kind="grad",
        )


@pytest.mark.requires("momentum")
@pytest.mark.erratum
def test_book_rule_is_keras_nesterov_and_moves_downhill(impl: Impl) -> None:
    # The book's last line is Keras' Nesterov rule; the 1st edition's "+ lr * g" went uphill.
    w, g, v = np.array([1.0]), np.array([2.0]), np.zeros(1)
    tw, tv = impl.call("momentum_step", impl.arr(w), impl.arr(g), impl.arr(v), 0.1, 0.9, "book")
    check_close(impl, impl.to_np(tv), np.array([-0.2]), what="velocity from rest (downhill)")
    check_close(impl, impl.to_np(tw), np.array([0.62]), what="w after one book-rule step")


@pytest.mark.requires("autodiff")
@pytest.mark.erratum
def test_computation_graph_gradients(impl: Impl) -> None:
    # The book's graph: x=2, w=3, b=1, y_true=4 -> x1=6, x2=7, loss 3; grads 2 and 1.
    # (Erratum: the review mixes in x=3, w=2, b=3, y_true=8 and reports grad(loss, w)=3.)
    gw, gb = impl.call("gradient_scalar_graph", 2.0, 3.0, 1.0, 4.0)
    gw, gb = float(impl.to_np(gw)), float(impl.to_np(gb))
    check(impl, gw == 2.0, f"grad(loss_val, w) must be 2, got {gw}")
    check(impl, gb == 1.0, f"grad(loss_val, b) must be 1, got {gb}")
    # the other side of abs: x=2, w=3, b=1, y_true=10 gives grads -2 and -1
    gw, gb = impl.call("gradient_scalar_graph", 2.0, 3.0, 1.0, 10.0)
    gw, gb = float(impl.to_np(gw)), float(impl.to_np(gb))
    check(impl, (gw, gb) == (-2.0, -1.0), f"below y_true the grads are -x, -1; got {gw}, {gb}")


@pytest.mark.requires("autodiff")
def test_gradient_tape_scalar_and_matrix(impl: Impl) -> None:
    out = impl.run("gradient_affine", impl.arr(np.array(0.0)))
    check_close(impl, out, np.array(2.0), what="d(2x + 3)/dx at x = 0")
    x = np.random.default_rng(0).random((2, 2))
    out = impl.run("gradient_affine", impl.arr(x))
    check_close(impl, out, np.full((2, 2), 2.0), what="gradient of 2x + 3 for a (2, 2) x")


@pytest.mark.requires("autodiff")
def test_gradient_tape_dense_uses_the_sum(impl: Impl) -> None:
    rng = np.random.default_rng(1)
    x, W, b = rng.random((2, 2)), rng.random((2, 2)), np.zeros(2)
    gw, gb = impl.run_many("gradient_dense", impl.arr(x), impl.arr(W), impl.arr(b))
    # TF's rule: a non-scalar target is differentiated through its sum.
    check_close(
        impl,
        gw,
        np.repeat(x.sum(axis=0)[:, None], 2, axis=1),
        what="grad of sum(xW+b) wrt W",
        kind="grad",
    )
    check_close(impl, gb, np.array([2.0, 2.0]), what="grad of sum(xW+b) wrt b", kind="grad")
