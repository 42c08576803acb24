"""The NumPy reference and the torch port agree, from identical weights and batches.

float64: the loss and every weight after 1 and after 50 steps agree to rtol 1e-10;
float32: to rtol 1e-5. These are the seed of the conformance suite's cross-implementation specs.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

import conformance.reference as ref
import dl_ch2

DTYPES = {
    "float64": (np.float64, torch.float64, 1e-10),
    "float32": (np.float32, torch.float32, 1e-5),
}


def mnist_like(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sparse [0, 1] images like MNIST's (most pixels 0), so the book's init behaves as on MNIST."""
    rng = np.random.default_rng(seed)
    x = rng.random((n, 784)) * (rng.random((n, 784)) < 0.19)
    return x, rng.integers(0, 10, n)


def pair_of_models(
    np_dtype: type, t_dtype: torch.dtype, seed: int = 0
) -> tuple[ref.NaiveSequential, dl_ch2.NaiveSequential]:
    r = ref.build_naive_model(dtype=np_dtype, rng=np.random.default_rng(seed))
    t = dl_ch2.build_naive_model(dtype=t_dtype)
    with torch.no_grad():
        for tw, rw in zip(t.weights, r.weights, strict=True):
            tw.copy_(torch.from_numpy(rw))
    return r, t


def assert_weights_close(r: list[np.ndarray], t: list[torch.Tensor], rtol: float) -> None:
    for i, (a, b) in enumerate(zip(r, t, strict=True)):
        b_np = b.detach().cpu().numpy()
        # atol scaled to the weight's magnitude: biases start at exactly 0
        atol = rtol * max(1.0, float(np.abs(a).max()))
        np.testing.assert_allclose(b_np, a, rtol=rtol, atol=atol, err_msg=f"weights[{i}]")


@pytest.mark.parametrize("dtype_name", list(DTYPES))
@pytest.mark.parametrize("steps", [1, 50])
def test_training_steps_agree(dtype_name: str, steps: int) -> None:
    np_dtype, t_dtype, rtol = DTYPES[dtype_name]
    r, t = pair_of_models(np_dtype, t_dtype)
    x, y = mnist_like(steps * 32, seed=1)
    x = x.astype(np_dtype)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    for k in range(steps):
        sl = slice(32 * k, 32 * (k + 1))
        loss_r = ref.one_training_step(r, x[sl], y[sl], learning_rate=1e-3)
        loss_t = float(dl_ch2.one_training_step(t, xt[sl], yt[sl], learning_rate=1e-3))
        assert loss_t == pytest.approx(loss_r, rel=rtol), f"loss at step {k}"
    assert_weights_close(r.weights, t.weights, rtol)


def test_gradients_agree_where_clipping_acts() -> None:
    r, t = pair_of_models(np.float64, torch.float64, seed=3)
    x, y = mnist_like(64, seed=4)
    x = x * 4  # larger inputs saturate the softmax: clipping acts on many entries
    probs = r(x)
    assert ((probs < 1e-7) | (probs > 1 - 1e-7)).mean() > 0.1
    loss_r, grads_r = ref.loss_and_gradients(r, x, y)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    loss_t = dl_ch2.sparse_categorical_crossentropy(yt, t(xt)).mean()
    grads_t = torch.autograd.grad(loss_t, t.weights)
    assert float(loss_t.detach()) == pytest.approx(loss_r, rel=1e-12)
    for gr, gt in zip(grads_r, grads_t, strict=True):
        np.testing.assert_allclose(gt.numpy(), gr, rtol=1e-10, atol=1e-14)


def test_fit_agrees_and_prints_the_same() -> None:
    r, t = pair_of_models(np.float64, torch.float64)
    x, y = mnist_like(300, seed=2)
    lines_r: list[str] = []
    lines_t: list[str] = []
    hist_r = ref.fit(r, x, y, epochs=2, batch_size=64, log_every=2, print_fn=lines_r.append)
    hist_t = dl_ch2.fit(
        t,
        torch.from_numpy(x),
        torch.from_numpy(y),
        epochs=2,
        batch_size=64,
        log_every=2,
        print_fn=lines_t.append,
        progress=False,
    )
    assert lines_r == lines_t
    np.testing.assert_allclose(hist_t.batch_losses, hist_r, rtol=1e-10)
    assert ref.evaluate(r, x, y) == dl_ch2.evaluate(t, torch.from_numpy(x), torch.from_numpy(y))


def test_first_example_agrees_under_rmsprop() -> None:
    rm = ref.FirstExampleModel(rng=np.random.default_rng(0))
    tm = dl_ch2.build_first_example_model(dtype=torch.float64)
    with torch.no_grad():
        for p, w in zip(tm.parameters(), rm.weights, strict=True):
            p.copy_(torch.from_numpy(w))
    x, y = mnist_like(256, seed=5)
    ropt, topt = ref.RMSprop(), dl_ch2.keras_rmsprop(tm.parameters())
    for k in range(8):
        sl = slice(32 * k, 32 * (k + 1))
        loss_r, grads = rm.loss_and_gradients(x[sl], y[sl])
        ropt.apply_gradients(grads, rm.weights)
        loss_t = torch.nn.functional.cross_entropy(
            tm(torch.from_numpy(x[sl])), torch.from_numpy(y[sl])
        )
        topt.zero_grad()
        loss_t.backward()
        topt.step()
        assert float(loss_t.detach()) == pytest.approx(loss_r, rel=1e-10)
    assert_weights_close(rm.weights, list(tm.parameters()), 1e-9)


ERROR_CASES = [
    ("naive_add", lambda m: m.naive_add, ((3, 4), (4, 3))),
    ("naive_matrix_dot", lambda m: m.naive_matrix_dot, ((3, 4), (3, 4))),
    ("naive_vector_dot", lambda m: m.naive_vector_dot, ((3,), (4,))),
    ("naive_add_matrix_and_vector", lambda m: m.naive_add_matrix_and_vector, ((3, 4), (3,))),
    ("naive_relu", lambda m: lambda x, _y: m.naive_relu(x), ((2, 2, 2), (1,))),
]


def _message(exc: BaseException) -> str:
    return re.sub(r"numpy\.ndarray|torch\.Tensor", "ARRAY", str(exc))


@pytest.mark.parametrize(("name", "get", "shapes"), ERROR_CASES, ids=[c[0] for c in ERROR_CASES])
def test_same_value_errors_for_the_same_mistakes(name, get, shapes) -> None:  # type: ignore[no-untyped-def]
    xs, ys = shapes
    with pytest.raises(ValueError) as from_ref:
        get(ref)(np.zeros(xs), np.zeros(ys))
    with pytest.raises(ValueError) as from_port:
        get(dl_ch2)(torch.zeros(xs), torch.zeros(ys))
    assert _message(from_ref.value) == _message(from_port.value)


def test_same_errors_for_loss_and_batches() -> None:
    p_np, p_t = np.full((4, 3), 1 / 3), torch.full((4, 3), 1 / 3)
    for labels_np, labels_t in [
        (np.zeros(5, dtype=np.int64), torch.zeros(5, dtype=torch.long)),
        (np.array([0, 1, 2, 3]), torch.tensor([0, 1, 2, 3])),
    ]:
        with pytest.raises(ValueError) as a:
            ref.sparse_categorical_crossentropy(labels_np, p_np)
        with pytest.raises(ValueError) as b:
            dl_ch2.sparse_categorical_crossentropy(labels_t, p_t)
        assert str(a.value) == str(b.value)
    with pytest.raises(ValueError) as a:
        ref.BatchGenerator(np.zeros((10, 2)), np.zeros(9), 4)
    with pytest.raises(ValueError) as b:
        dl_ch2.BatchGenerator(torch.zeros(10, 2), torch.zeros(9), 4)
    assert str(a.value) == str(b.value)
    with pytest.raises(ValueError) as a:
        ref.update_weights([np.zeros((8, 12))], [np.zeros((12, 8))])
    with pytest.raises(ValueError) as b:
        dl_ch2.update_weights([torch.zeros(8, 12)], [torch.zeros(12, 8)])
    assert str(a.value) == str(b.value)
