"""§2.4 Gradient-based optimization: slopes, SGD, momentum, the chain rule, backprop, tapes."""

from __future__ import annotations

import math

import numpy as np
import pytest

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


def _sgd_1d(
    impl: Impl, w0: float, lr: float, steps: int, momentum: float = 0.0, grad=lambda w: 2 * w
) -> list[float]:  # type: ignore[no-untyped-def]
    w, v = np.array([w0]), np.zeros(1)
    path = [w0]
    for _ in range(steps):
        tw, tv = impl.call(
            "momentum_step", impl.arr(w), impl.arr(grad(w)), impl.arr(v), lr, momentum, "keras"
        )
        w, v = impl.to_np(tw).astype(np.float64), impl.to_np(tv).astype(np.float64)
        path.append(float(w[0]))
        if not np.isfinite(w).all() or abs(w[0]) > 1e12:
            break
    return path


@pytest.mark.requires("momentum")
def test_sgd_on_a_curve_converges_crawls_diverges(impl: Impl) -> None:
    good = _sgd_1d(impl, 5.0, 0.1, 100)
    tiny = _sgd_1d(impl, 5.0, 1e-4, 100)
    big = _sgd_1d(impl, 5.0, 1.1, 100)
    check(impl, abs(good[-1]) < 1e-6, f"lr 0.1 should converge to 0 on w**2, ended at {good[-1]}")
    check(impl, 4.9 < tiny[-1] < 5.0, f"lr 1e-4 should crawl (4.9 < w < 5), ended at {tiny[-1]}")
    check(impl, abs(big[-1]) > 1e6, f"lr 1.1 should diverge, ended at {big[-1]}")


@pytest.mark.requires("momentum")
def test_local_minimum_without_momentum_global_with(impl: Impl) -> None:
    def grad(w: np.ndarray) -> np.ndarray:
        return w**3 - 2 * w + 0.3  # loss w**4/4 - w**2 + 0.3 w: minima near 1.332 and -1.484

    plain = _sgd_1d(impl, 2.5, 0.01, 1500, grad=grad)
    rolling = _sgd_1d(impl, 2.5, 0.01, 1500, momentum=0.9, grad=grad)
    check(impl, abs(plain[-1] - 1.33222074) < 1e-4, f"plain SGD should stop at 1.332: {plain[-1]}")
    check(
        impl,
        abs(rolling[-1] + 1.48396789) < 1e-4,
        f"momentum 0.9 should reach the global minimum -1.484: {rolling[-1]}",
    )


@pytest.mark.requires("momentum")
@pytest.mark.parametrize("rule", ["book", "keras", "nesterov"])
def test_momentum_rules_over_20_steps(impl: Impl, rule: str) -> None:
    c = load_case(f"momentum_{rule}")
    w, v = c["w0"], np.zeros(3)
    for k in range(20):
        tw, tv = impl.call(
            "momentum_step", impl.arr(w), impl.arr(c["curvature"] * w), impl.arr(v), 0.05, 0.9, rule
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


def test_chain_rule_examples() -> None:
    # Facts of the chapter: grad(y, x) = product of local derivatives along the chain.
    def fd(f, x, h=1e-6):  # type: ignore[no-untyped-def]
        return (f(x + h) - f(x - h)) / (2 * h)

    g, f = (lambda x: x**2 + 1), math.sin
    x = 0.7
    assert math.isclose(math.cos(g(x)) * 2 * x, fd(lambda t: f(g(t)), x), rel_tol=1e-7)
    j, h = (lambda t: 3 * t), math.exp
    x = 0.2
    analytic = math.cos(g(h(j(x)))) * 2 * h(j(x)) * math.exp(j(x)) * 3
    assert math.isclose(analytic, fd(lambda t: f(g(h(j(t)))), x), rel_tol=1e-6)


@pytest.mark.requires("autodiff")
@pytest.mark.erratum
def test_computation_graph_gradients(impl: Impl) -> None:
    # The book's graph: x=2, w=3, b=1, y_true=4 -> x1=6, x2=7, loss 3; grads 2 and 1.
    # (Erratum: the review mixes in x=3, w=2, b=3, y_true=8 and reports grad(loss, w)=3.)
    gw, gb = impl.call("gradient_scalar_graph", 2.0, 3.0, 1.0, 4.0)
    gw, gb = float(impl.to_np(gw)), float(impl.to_np(gb))
    check(impl, gw == 2.0, f"grad(loss_val, w) must be 2, got {gw}")
    check(impl, gb == 1.0, f"grad(loss_val, b) must be 1, got {gb}")
    x1, x2 = 2.0 * 3.0, 2.0 * 3.0 + 1.0
    assert (x1, x2, abs(4.0 - x2)) == (6.0, 7.0, 3.0)


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


@pytest.mark.erratum
def test_gradient_is_slope_not_curvature() -> None:
    # Erratum (notebook text): "the gradient ... represents the curvature". On loss(w) = w**2
    # the gradient (slope) at the minimum is 0, while the curvature there is 2.
    def loss(w: float) -> float:
        return w * w

    h = 1e-4
    slope = (loss(h) - loss(-h)) / (2 * h)
    curvature = (loss(h) - 2 * loss(0.0) + loss(-h)) / h**2
    assert slope == 0.0 and abs(curvature - 2.0) < 1e-6
