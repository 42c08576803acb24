"""The NumPy reference on its own: hand-derived gradients vs central finite differences."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Callable

import numpy as np
import pytest

import conformance.reference as ref
from conformance.reference.losses import EPSILON


def central_diff(f: Callable[[], float], x: np.ndarray, h: float = 1e-6) -> np.ndarray:
    """d f / d x by central differences, perturbing x in place."""
    g = np.zeros_like(x)
    it = np.nditer(x, flags=["multi_index"])
    for _ in it:
        i = it.multi_index
        old = x[i]
        x[i] = old + h
        fp = f()
        x[i] = old - h
        fm = f()
        x[i] = old
        g[i] = (fp - fm) / (2 * h)
    return g


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(a)), np.max(np.abs(b)), 1e-12))


def test_torch_is_not_imported() -> None:
    code = textwrap.dedent(
        """
        import sys
        sys.modules["torch"] = None  # any `import torch` now raises ImportError
        import conformance.reference as r
        import numpy as np
        m = r.build_naive_model(rng=np.random.default_rng(0))
        print(len(m.weights), "torch" in sys.modules and sys.modules["torch"] is not None)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=str(__import__("pathlib").Path(__file__).parents[1]),
    )
    assert out.stdout.split() == ["4", "False"]


@pytest.mark.parametrize("seed", range(3))
def test_loss_gradient_probabilities_with_clipping(seed: int) -> None:
    rng = np.random.default_rng(seed)
    p = rng.uniform(0.05, 0.9, (6, 5))
    p[0, 1] = 1e-9  # clipped low
    p[2, 3] = 1.0 - 1e-9  # clipped high
    p[4, :] = [0.0, 1.0, 0.0, 0.0, 0.0]  # a saturated softmax row
    labels = np.array([1, 0, 3, 2, 0, 4])
    analytic = ref.sparse_categorical_crossentropy_backward(labels, p)
    numeric = central_diff(
        lambda: float(ref.sparse_categorical_crossentropy(labels, p).mean()), p, h=1e-6
    )
    inside = (p > 10 * EPSILON) & (p < 1 - 10 * EPSILON)
    assert rel_err(analytic[inside], numeric[inside]) < 1e-6
    clipped = (p < EPSILON) | (p > 1 - EPSILON)
    assert clipped.sum() == 7 and np.all(analytic[clipped] == 0)
    # and clipping really renormalises: row 4's loss is not -log(clip(p_y))
    loss4 = ref.sparse_categorical_crossentropy(labels[4:5], p[4:5])[0]
    assert loss4 == pytest.approx(np.log(1 - 1e-7 + 4e-7) - np.log(1e-7))


def test_loss_gradient_logits() -> None:
    rng = np.random.default_rng(0)
    z = rng.normal(size=(7, 4)) * 3
    labels = rng.integers(0, 4, 7)
    analytic = ref.sparse_categorical_crossentropy_backward(labels, z, from_logits=True)
    numeric = central_diff(
        lambda: float(ref.sparse_categorical_crossentropy(labels, z, from_logits=True).mean()), z
    )
    assert rel_err(analytic, numeric) < 1e-6


@pytest.mark.parametrize("act", [ref.relu, ref.softmax, ref.identity], ids=lambda f: f.__name__)
def test_dense_backward_each_activation(act: Callable[[np.ndarray], np.ndarray]) -> None:
    rng = np.random.default_rng(1)
    layer = ref.NaiveDense(5, 4, act, rng=rng)
    layer.W -= 0.05  # straddle zero so relu has both regimes
    layer.b[...] = rng.normal(size=4) * 0.1
    x = rng.normal(size=(3, 5))
    upstream = rng.normal(size=(3, 4))

    def f() -> float:
        return float((layer(x) * upstream).sum())

    z, a = layer.forward(x)
    dW, db, dx = layer.backward(x, z, a, upstream)
    assert rel_err(dW, central_diff(f, layer.W)) < 1e-6
    assert rel_err(db, central_diff(f, layer.b)) < 1e-6
    assert dx is not None and rel_err(dx, central_diff(f, x)) < 1e-6


@pytest.mark.parametrize("seed", range(3))
def test_whole_model_gradient_small_shapes(seed: int) -> None:
    rng = np.random.default_rng(seed)
    sizes = rng.integers(2, 7, 3)
    model = ref.NaiveSequential(
        [
            ref.NaiveDense(int(sizes[0]), int(sizes[1]), ref.relu, rng=rng),
            ref.NaiveDense(int(sizes[1]), int(sizes[2]), ref.identity, rng=rng),
            ref.NaiveDense(int(sizes[2]), 3, ref.softmax, rng=rng),
        ]
    )
    for w in model.weights:
        w += rng.normal(size=w.shape) * 0.3
    x = rng.normal(size=(5, int(sizes[0])))
    y = rng.integers(0, 3, 5)
    _loss, grads = ref.loss_and_gradients(model, x, y)
    for w, g in zip(model.weights, grads, strict=True):
        numeric = central_diff(
            lambda: float(ref.sparse_categorical_crossentropy(y, model(x)).mean()), w
        )
        assert g.shape == w.shape
        assert rel_err(g, numeric) < 1e-6


def test_whole_model_gradient_where_clipping_acts() -> None:
    rng = np.random.default_rng(5)
    model = ref.NaiveSequential(
        [
            ref.NaiveDense(4, 6, ref.relu, rng=rng),
            ref.NaiveDense(6, 3, ref.softmax, rng=rng),
        ]
    )
    model.layers[1].W[...] = rng.normal(size=(6, 3)) * 30  # saturate the softmax
    x = rng.uniform(0, 1, (6, 4))
    y = np.array([0, 1, 2, 0, 1, 2])
    p = model(x)
    assert ((p < EPSILON) | (p > 1 - EPSILON)).any(), "the test needs clipping to act"
    _, grads = ref.loss_and_gradients(model, x, y)
    for w, g in zip(model.weights, grads, strict=True):
        numeric = central_diff(
            lambda: float(ref.sparse_categorical_crossentropy(y, model(x)).mean()), w, h=1e-7
        )
        assert np.max(np.abs(g - numeric)) < 1e-6 * max(1.0, np.max(np.abs(numeric)))


def test_unsupported_activation_is_a_clear_error() -> None:
    model = ref.NaiveSequential([ref.NaiveDense(3, 2, np.tanh)])
    with pytest.raises(ValueError, match="no backward rule for activation 'tanh'"):
        ref.loss_and_gradients(model, np.ones((2, 3)), np.array([0, 1]))


def test_first_example_gradients() -> None:
    rng = np.random.default_rng(0)
    model = ref.FirstExampleModel(rng=rng)
    model.weights[0] = model.weights[0][:, :]  # full size, but check a slice of entries
    x = rng.uniform(0, 1, (4, 784))
    y = np.array([1, 7, 3, 3])
    _, grads = model.loss_and_gradients(x, y)

    def f() -> float:
        return float(
            ref.sparse_categorical_crossentropy(y, model.logits(x), from_logits=True).mean()
        )

    for k in (1, 2, 3):  # b1, W2, b2 fully
        assert rel_err(grads[k], central_diff(f, model.weights[k])) < 1e-6
    W1 = model.weights[0]
    sub = W1[:3, 100:104]  # a view: perturbing it perturbs W1
    numeric = central_diff(f, sub)
    assert rel_err(grads[0][:3, 100:104], numeric) < 1e-6


def test_scalar_graph_and_dense_sum_gradients() -> None:
    from conformance.reference.gradients import dense_sum_gradients

    g = ref.ScalarGraph()
    assert g.forward() == {"x1": 6.0, "x2": 7.0, "loss_val": 3.0}
    assert (g.grad_by_paths("w"), g.grad_by_paths("b")) == (2.0, 1.0)
    rng = np.random.default_rng(0)
    x, W, b = rng.random((3, 2)), rng.random((2, 4)), np.zeros(4)
    dW, db = dense_sum_gradients(x, W, b)
    assert rel_err(dW, central_diff(lambda: float((x @ W + b).sum()), W)) < 1e-8
    assert np.all(db == 3.0)


def test_rmsprop_and_sgd_rules_by_hand() -> None:
    w = np.array([1.0, -2.0])
    opt = ref.RMSprop()
    g = np.array([0.5, -1e-4])
    opt.apply_gradients([g], [w])
    rms = 0.1 * g * g
    np.testing.assert_allclose(
        w, np.array([1.0, -2.0]) - 1e-3 * g / (np.sqrt(rms) + 1e-7), rtol=1e-15
    )
    w2, v = np.array([1.0]), np.zeros(1)
    sgd = ref.SGD(0.1, momentum=0.9, nesterov=True)
    w3 = w2.copy()
    for _ in range(5):
        w2, v = ref.naive_momentum_update(w2, 2 * w2, v, 0.1, 0.9)
        sgd.apply_gradients([2 * w3], [w3])
    np.testing.assert_allclose(w3, w2, rtol=1e-15)


def test_naive_ops_match_numpy() -> None:
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(4, 5)), rng.normal(size=(5, 3))
    xb = x.copy()
    np.testing.assert_allclose(ref.naive_relu(x), np.maximum(x, 0))
    np.testing.assert_allclose(ref.naive_matrix_dot(x, y), x @ y, rtol=1e-12)
    v = rng.normal(size=5)
    np.testing.assert_allclose(ref.naive_matrix_vector_dot(x, v), x @ v, rtol=1e-12)
    np.testing.assert_allclose(ref.naive_matrix_vector_dot_via_vector_dot(x, v), x @ v, rtol=1e-12)
    np.testing.assert_allclose(ref.naive_add_matrix_and_vector(x, v), x + v)
    np.testing.assert_allclose(ref.naive_add(x, x), 2 * x)
    np.testing.assert_array_equal(x, xb)
