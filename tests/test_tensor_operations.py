"""§2.3: naive ops equal vectorized ones, never mutate inputs, reject bad shapes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch.testing import assert_close

from dl_ch2 import tensor_operations as ops


def rand(*shape: int, device: torch.device, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(shape, generator=g, dtype=torch.float64) * 2 - 1).to(device)


# --- naive element-wise ops -----------------------------------------------------------


def test_naive_relu_matches_torch_and_keeps_input(device: torch.device) -> None:
    x = rand(20, 100, device=device)
    before = x.clone()
    out = ops.naive_relu(x)
    assert_close(out, torch.relu(x))
    assert torch.equal(x, before), "naive_relu mutated its input"
    assert (x < 0).any() and (out >= 0).all()


def test_naive_add_matches_torch_and_keeps_inputs(device: torch.device) -> None:
    x, y = rand(7, 5, device=device, seed=1), rand(7, 5, device=device, seed=2)
    xb, yb = x.clone(), y.clone()
    assert_close(ops.naive_add(x, y), x + y)
    assert torch.equal(x, xb) and torch.equal(y, yb)


def test_naive_add_matrix_and_vector_is_broadcasting(device: torch.device) -> None:
    x, y = rand(32, 10, device=device, seed=3), rand(10, device=device, seed=4)
    xb = x.clone()
    out = ops.naive_add_matrix_and_vector(x, y)
    assert_close(out, x + y)
    np.testing.assert_allclose(out.cpu().numpy(), x.cpu().numpy() + y.cpu().numpy())
    assert torch.equal(x, xb)


# --- naive dots -------------------------------------------------------------------------


def test_naive_vector_dot(device: torch.device) -> None:
    x, y = rand(17, device=device, seed=5), rand(17, device=device, seed=6)
    z = ops.naive_vector_dot(x, y)
    assert z.shape == ()
    assert math.isclose(float(z), float(np.dot(x.cpu().numpy(), y.cpu().numpy())), rel_tol=1e-12)


@pytest.mark.parametrize(
    "fn", [ops.naive_matrix_vector_dot, ops.naive_matrix_vector_dot_via_vector_dot]
)
def test_naive_matrix_vector_dot_both_forms(fn, device: torch.device) -> None:  # type: ignore[no-untyped-def]
    x, y = rand(6, 9, device=device, seed=7), rand(9, device=device, seed=8)
    xb, yb = x.clone(), y.clone()
    out = fn(x, y)
    assert out.shape == (6,)
    np.testing.assert_allclose(out.cpu().numpy(), x.cpu().numpy() @ y.cpu().numpy(), rtol=1e-12)
    assert torch.equal(x, xb) and torch.equal(y, yb)


def test_naive_matrix_dot(device: torch.device) -> None:
    x, y = rand(4, 6, device=device, seed=9), rand(6, 3, device=device, seed=10)
    out = ops.naive_matrix_dot(x, y)
    assert out.shape == (4, 3)
    np.testing.assert_allclose(out.cpu().numpy(), x.cpu().numpy() @ y.cpu().numpy(), rtol=1e-12)


def test_naive_ops_handle_integer_inputs() -> None:
    x = torch.tensor([[1, -2], [3, -4]])
    assert torch.equal(ops.naive_relu(x), torch.tensor([[1, 0], [3, 0]]))
    assert torch.equal(ops.naive_matrix_dot(x, x), x @ x)


@pytest.mark.parametrize(
    ("fn", "x_shape", "y_shape"),
    [
        (ops.naive_add, (3, 4), (4, 3)),
        (ops.naive_add, (3, 4), (3, 4, 1)),
        (ops.naive_add_matrix_and_vector, (3, 4), (3,)),
        (ops.naive_add_matrix_and_vector, (3, 4), (3, 4)),
        (ops.naive_vector_dot, (3,), (4,)),
        (ops.naive_vector_dot, (3, 1), (3,)),
        (ops.naive_matrix_vector_dot, (3, 4), (3,)),
        (ops.naive_matrix_vector_dot_via_vector_dot, (3, 4), (5,)),
        (ops.naive_matrix_dot, (3, 4), (3, 4)),
        (ops.naive_matrix_dot, (3,), (3, 4)),
    ],
)
def test_naive_ops_reject_bad_shapes_naming_them(fn, x_shape, y_shape) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match=r"\(") as info:
        fn(torch.zeros(x_shape), torch.zeros(y_shape))
    msg = str(info.value)
    assert str(x_shape) in msg or str(y_shape) in msg


def test_naive_relu_rejects_wrong_rank_and_non_tensor() -> None:
    with pytest.raises(ValueError, match=r"rank 2.*\(2, 2, 2\)"):
        ops.naive_relu(torch.zeros(2, 2, 2))
    with pytest.raises(TypeError, match=r"torch\.Tensor"):
        ops.naive_relu([[1.0]])  # type: ignore[arg-type]


@given(m=st.integers(1, 5), n=st.integers(1, 5), p=st.integers(1, 5), seed=st.integers(0, 2**16))
def test_property_naive_matrix_dot_equals_matmul(m: int, n: int, p: int, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(m, n, generator=g, dtype=torch.float64)
    y = torch.randn(n, p, generator=g, dtype=torch.float64)
    assert_close(ops.naive_matrix_dot(x, y), x @ y)
    assert_close(ops.naive_relu(x), torch.relu(x))


# --- §2.3.2 broadcasting --------------------------------------------------------------


def test_stretch_10_vector_to_32_by_10_equals_broadcast(device: torch.device) -> None:
    x, y = rand(32, 10, device=device, seed=11), rand(10, device=device, seed=12)
    big = ops.stretch(y, (32, 10))
    assert big.shape == (32, 10)
    assert all(torch.equal(big[i], y) for i in range(32))
    assert torch.equal(x + big, x + y)


def test_maximum_broadcasts_64_3_32_10_with_32_10(device: torch.device) -> None:
    g = torch.Generator().manual_seed(13)
    x = torch.rand(64, 3, 32, 10, generator=g).to(device)
    y = torch.rand(32, 10, generator=g).to(device)
    z = torch.maximum(x, y)
    assert z.shape == (64, 3, 32, 10)
    assert torch.equal(z, torch.maximum(x, ops.stretch(y, x.shape)))
    ref = np.maximum(x.cpu().numpy(), y.cpu().numpy())
    np.testing.assert_array_equal(z.cpu().numpy(), ref)


def test_stretch_rejects_mismatched_trailing_axes() -> None:
    with pytest.raises(ValueError, match=r"\(10,\).*\(32, 11\)"):
        ops.stretch(torch.zeros(10), (32, 11))


@given(
    shape=st.lists(st.integers(1, 4), min_size=1, max_size=4),
    k=st.integers(0, 3),
)
def test_property_stretch_equals_expand(shape: list[int], k: int) -> None:
    k = min(k, len(shape))
    y = torch.arange(math.prod(shape[k:]), dtype=torch.float64).reshape(shape[k:])
    assert torch.equal(ops.stretch(y, shape), y.expand(*shape))


# --- §2.3.3 tensor product shape rules ------------------------------------------------


def test_dot_shape_rules() -> None:
    a, b, c, d, e = 2, 3, 4, 5, 6
    assert ops.dot_output_shape((a, b, c, d), (d,)) == (a, b, c)
    assert ops.dot_output_shape((a, b, c, d), (d, e)) == (a, b, c, e)
    x = torch.randn(a, b, c, d, dtype=torch.float64)
    assert ops.dot(x, torch.randn(d, dtype=torch.float64)).shape == (a, b, c)
    assert ops.dot(x, torch.randn(d, e, dtype=torch.float64)).shape == (a, b, c, e)


@given(
    xs=st.lists(st.integers(1, 3), min_size=1, max_size=3),
    ys=st.lists(st.integers(1, 3), min_size=0, max_size=2),
    seed=st.integers(0, 1000),
)
def test_property_dot_matches_numpy(xs: list[int], ys: list[int], seed: int) -> None:
    rng = np.random.default_rng(seed)
    y_shape = [*ys[:-1], xs[-1], *ys[-1:]] if ys else [xs[-1]]
    x = rng.standard_normal(xs)
    y = rng.standard_normal(y_shape)
    out = ops.dot(torch.from_numpy(x), torch.from_numpy(y))
    expected = np.dot(x, y)
    assert tuple(out.shape) == expected.shape == ops.dot_output_shape(xs, y_shape)
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-12, atol=1e-12)


def test_dot_is_not_symmetric() -> None:
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    y = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    assert not torch.equal(ops.dot(x, y), ops.dot(y, x))


def test_dot_rejects_incompatible_shapes() -> None:
    with pytest.raises(ValueError, match=r"\(3, 4\) and \(5, 2\)"):
        ops.dot(torch.zeros(3, 4), torch.zeros(5, 2))


# --- §2.3.4 reshaping and transposition -----------------------------------------------


def test_reshape_book_example_values() -> None:
    x = torch.tensor([[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]])
    assert x.shape == (3, 2)
    col = ops.reshape(x, (6, 1))
    assert col.tolist() == [[0.0], [1.0], [2.0], [3.0], [4.0], [5.0]]
    assert ops.reshape(col, (2, 3)).tolist() == [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]


def test_transpose_300_by_20() -> None:
    x = torch.zeros(300, 20)
    assert ops.transpose(x).shape == (20, 300)
    y = torch.arange(6).reshape(2, 3)
    # erratum (review): transposing (2, 3) gives (3, 2), x[i, :] == x.T[:, i]
    assert ops.transpose(y).shape == (3, 2)
    assert torch.equal(ops.transpose(y)[:, 1], y[1, :])


def test_reshape_vector_to_scalar_is_rejected() -> None:
    # erratum (review): a 3-vector cannot become shape ()
    with pytest.raises(ValueError, match=r"\(3,\).*\(\)"):
        ops.reshape(torch.tensor([1, 2, 3]), ())


# --- §2.3.5 geometry ------------------------------------------------------------------


def test_vector_addition() -> None:
    a, b = torch.tensor([0.5, 1.0]), torch.tensor([1.0, 0.25])
    assert ops.vector_add(a, b).tolist() == [1.5, 1.25]


def test_rotation_convention_counter_clockwise() -> None:
    theta = math.pi / 6
    r = ops.rotation_matrix(theta)
    u = torch.tensor([math.cos(theta), math.sin(theta)], dtype=torch.float64)
    v = torch.tensor([-math.sin(theta), math.cos(theta)], dtype=torch.float64)
    assert torch.equal(r[0], u) and torch.equal(r[1], v)  # R = [u, v] as rows
    e1 = torch.tensor([1.0, 0.0], dtype=torch.float64)
    assert_close(ops.rotate(e1, theta), u)
    e2 = torch.tensor([0.0, 1.0], dtype=torch.float64)
    assert_close(ops.rotate(e2, theta), v)
    # quarter turn: x axis -> y axis (counter-clockwise)
    assert_close(ops.rotate(e1, math.pi / 2), e2, atol=1e-15, rtol=0)


@given(theta=st.floats(-10, 10), x=st.floats(-5, 5), y=st.floats(-5, 5))
def test_property_rotation_preserves_length_and_composes(theta: float, x: float, y: float) -> None:
    p = torch.tensor([x, y], dtype=torch.float64)
    q = ops.rotate(p, theta)
    assert math.isclose(float(q.norm()), float(p.norm()), rel_tol=1e-12, abs_tol=1e-12)
    assert_close(ops.rotate(q, -theta), p, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize(("dx", "dy"), [("cpu", "meta"), ("meta", "cpu")])
def test_dot_refuses_tensors_on_different_devices_naming_both(dx: str, dy: str) -> None:
    """Issue 29: dot of a CPU and a meta tensor returned uninitialised memory."""
    x = torch.ones(2, 2, device=dx)
    y = torch.ones(2, 2, device=dy)
    with pytest.raises(ValueError, match=rf"x is on {dx}.*y is on {dy}"):
        ops.dot(x, y)
    with pytest.raises(ValueError, match="different devices"):
        ops.dot(torch.ones(3, device=dx), torch.ones(3, device=dy))
