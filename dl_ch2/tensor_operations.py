"""§2.3 The gears of neural networks: tensor operations.

The book's naive loop implementations (§2.3.1 element-wise operations, §2.3.2 broadcasting,
§2.3.3 tensor product), the shape rules of the tensor dot, reshaping and transposition
(§2.3.4) and the 2D geometric examples (§2.3.5), on torch tensors.

The naive functions copy before writing, so callers' tensors are never mutated, and
raise ValueError instead of the book's ``assert`` (which ``python -O`` strips).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from dl_ch2._checks import require_rank, require_tensor, shape_str

__all__ = [
    "dot",
    "dot_output_shape",
    "naive_add",
    "naive_add_matrix_and_vector",
    "naive_matrix_dot",
    "naive_matrix_vector_dot",
    "naive_matrix_vector_dot_via_vector_dot",
    "naive_relu",
    "naive_vector_dot",
    "reshape",
    "rotate",
    "rotation_matrix",
    "stretch",
    "transpose",
    "vector_add",
]


def _result_dtype(x: torch.Tensor, y: torch.Tensor) -> torch.dtype:
    return torch.result_type(x, y)


# --- §2.3.1 Element-wise operations ------------------------------------------------------


def naive_relu(x: torch.Tensor) -> torch.Tensor:
    """§2.3.1: relu of a rank-2 tensor with explicit loops; returns a new tensor."""
    require_tensor("x", x)
    require_rank("x", x, 2)
    x = x.clone()  # never overwrite the caller's tensor
    for i in range(x.shape[0]):
        for j in range(x.shape[1]):
            if x[i, j] < 0:  # the book's max(x[i, j], 0)
                x[i, j] = 0
    return x


def naive_add(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """§2.3.1: element-wise sum of two rank-2 tensors of the same shape, with loops."""
    require_tensor("x", x)
    require_tensor("y", y)
    require_rank("x", x, 2)
    require_rank("y", y, 2)
    if x.shape != y.shape:
        raise ValueError(
            f"naive_add needs x and y of the same shape, got x {shape_str(x.shape)} "
            f"and y {shape_str(y.shape)}"
        )
    out = x.to(_result_dtype(x, y), copy=True)
    for i in range(x.shape[0]):
        for j in range(x.shape[1]):
            out[i, j] += y[i, j]
    return out


# --- §2.3.2 Broadcasting ------------------------------------------------------------------


def naive_add_matrix_and_vector(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """§2.3.2: add a vector y of shape (n,) to every row of a matrix x of shape (m, n)."""
    require_tensor("x", x)
    require_tensor("y", y)
    require_rank("x", x, 2)
    require_rank("y", y, 1)
    if x.shape[1] != y.shape[0]:
        raise ValueError(
            f"naive_add_matrix_and_vector needs x.shape[1] == y.shape[0], got x "
            f"{shape_str(x.shape)} and y {shape_str(y.shape)}"
        )
    out = x.to(_result_dtype(x, y), copy=True)
    for i in range(x.shape[0]):
        for j in range(x.shape[1]):
            out[i, j] += y[j]
    return out


def stretch(y: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """§2.3.2: broadcasting made explicit.

    Adds leading axes to ``y`` until it has ``len(shape)`` axes, then repeats it along
    them, e.g. a (10,) vector becomes (1, 10) and then (32, 10) by stacking 32 copies.
    The trailing axes of ``y`` must equal the trailing axes of ``shape``, as in the book
    (this is a materialised copy; torch's broadcasting does the same without copying).
    """
    require_tensor("y", y)
    target = tuple(int(s) for s in shape)
    if y.ndim > len(target) or tuple(y.shape) != target[len(target) - y.ndim :]:
        raise ValueError(
            f"cannot stretch y of shape {shape_str(y.shape)} to {shape_str(target)}: "
            "y's axes must equal the target's trailing axes"
        )
    out = y
    for _ in range(len(target) - y.ndim):
        out = out.unsqueeze(0)  # the book's np.expand_dims(y, axis=0)
    for axis in range(len(target) - y.ndim - 1, -1, -1):
        out = torch.cat([out] * target[axis], dim=axis)  # np.concatenate([y] * n, axis)
    return out


# --- §2.3.3 Tensor product ----------------------------------------------------------------


def naive_vector_dot(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """§2.3.3: dot product of two vectors of the same length, with a loop (a 0-d tensor)."""
    require_tensor("x", x)
    require_tensor("y", y)
    require_rank("x", x, 1)
    require_rank("y", y, 1)
    if x.shape[0] != y.shape[0]:
        raise ValueError(
            f"naive_vector_dot needs vectors of the same length, got x {shape_str(x.shape)} "
            f"and y {shape_str(y.shape)}"
        )
    z = torch.zeros((), dtype=_result_dtype(x, y), device=x.device)
    for i in range(x.shape[0]):
        z += x[i] * y[i]
    return z


def _check_matrix_vector(x: torch.Tensor, y: torch.Tensor, name: str) -> None:
    require_tensor("x", x)
    require_tensor("y", y)
    require_rank("x", x, 2)
    require_rank("y", y, 1)
    if x.shape[1] != y.shape[0]:
        raise ValueError(
            f"{name} needs x.shape[1] == y.shape[0], got x {shape_str(x.shape)} "
            f"and y {shape_str(y.shape)}"
        )


def naive_matrix_vector_dot(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """§2.3.3: matrix (m, n) times vector (n,) with two nested loops; shape (m,)."""
    _check_matrix_vector(x, y, "naive_matrix_vector_dot")
    z = torch.zeros(x.shape[0], dtype=_result_dtype(x, y), device=x.device)
    for i in range(x.shape[0]):
        for j in range(x.shape[1]):
            z[i] += x[i, j] * y[j]
    return z


def naive_matrix_vector_dot_via_vector_dot(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """§2.3.3: the same product, each output entry a ``naive_vector_dot`` of a row and y."""
    _check_matrix_vector(x, y, "naive_matrix_vector_dot_via_vector_dot")
    z = torch.zeros(x.shape[0], dtype=_result_dtype(x, y), device=x.device)
    for i in range(x.shape[0]):
        z[i] = naive_vector_dot(x[i, :], y)
    return z


def naive_matrix_dot(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """§2.3.3: matrix (m, n) times matrix (n, p): entry (i, j) is row i of x dot column j of y."""
    require_tensor("x", x)
    require_tensor("y", y)
    require_rank("x", x, 2)
    require_rank("y", y, 2)
    if x.shape[1] != y.shape[0]:
        raise ValueError(
            f"naive_matrix_dot needs x.shape[1] == y.shape[0], got x {shape_str(x.shape)} "
            f"and y {shape_str(y.shape)}"
        )
    z = torch.zeros((x.shape[0], y.shape[1]), dtype=_result_dtype(x, y), device=x.device)
    for i in range(x.shape[0]):
        for j in range(y.shape[1]):
            z[i, j] = naive_vector_dot(x[i, :], y[:, j])
    return z


def dot_output_shape(x_shape: Sequence[int], y_shape: Sequence[int]) -> tuple[int, ...]:
    """§2.3.3: the shape of ``dot(x, y)`` (NumPy's ``np.dot`` rule, which the book uses).

    The last axis of x is contracted with the only axis of a vector y, or with the
    second-to-last axis of y: (a, b, c, d) . (d,) -> (a, b, c);
    (a, b, c, d) . (d, e) -> (a, b, c, e). Scalars (rank 0) multiply element-wise.
    """
    xs = tuple(int(s) for s in x_shape)
    ys = tuple(int(s) for s in y_shape)
    if len(xs) == 0:
        return ys
    if len(ys) == 0:
        return xs
    contracted_y_axis = 0 if len(ys) == 1 else len(ys) - 2
    if xs[-1] != ys[contracted_y_axis]:
        raise ValueError(
            f"dot: shapes {shape_str(xs)} and {shape_str(ys)} are incompatible: x's last axis "
            f"({xs[-1]}) must equal y's axis {contracted_y_axis} ({ys[contracted_y_axis]})"
        )
    return xs[:-1] + ys[:contracted_y_axis] + ys[contracted_y_axis + 1 :]


def dot(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """§2.3.3: the tensor product with ``np.dot`` semantics, as written in the book.

    Equals ``x @ y`` for vectors and matrices; for higher ranks it contracts x's last axis
    with y's second-to-last one (``torch.matmul`` would broadcast batch axes instead).
    Not symmetric: ``dot(x, y) != dot(y, x)`` in general.
    """
    require_tensor("x", x)
    require_tensor("y", y)
    if x.device != y.device:  # torch would mix a meta tensor in and return garbage
        raise ValueError(
            f"dot: x is on {x.device} and y is on {y.device}: tensors on different devices; "
            f"move one, e.g. y.to({str(x.device)!r})"
        )
    dot_output_shape(x.shape, y.shape)  # raises ValueError naming the shapes
    if x.ndim == 0 or y.ndim == 0:
        return x * y
    y_axis = 0 if y.ndim == 1 else y.ndim - 2
    out: torch.Tensor = torch.tensordot(x, y, dims=([x.ndim - 1], [y_axis]))
    return out


# --- §2.3.4 Tensor reshaping --------------------------------------------------------------


def reshape(x: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """§2.3.4: reshape keeping the number of coefficients; a ValueError otherwise.

    For example a (3,) vector cannot become a scalar of shape () (3 coefficients vs 1):
    the review of the 2nd edition claims it can, an erratum.
    """
    require_tensor("x", x)
    target = tuple(int(s) for s in shape)
    if -1 not in target and math.prod(target) != x.numel():
        raise ValueError(
            f"cannot reshape x of shape {shape_str(x.shape)} ({x.numel()} coefficients) "
            f"to {shape_str(target)} ({math.prod(target)} coefficients)"
        )
    try:
        return x.reshape(target)
    except RuntimeError as exc:
        raise ValueError(f"cannot reshape x of shape {shape_str(x.shape)}: {exc}") from exc


def transpose(x: torch.Tensor) -> torch.Tensor:
    """§2.3.4: exchange rows and columns of a matrix, so x[i, :] becomes x.T[:, i].

    (300, 20) -> (20, 300). The review's claim that a (2, 3) array keeps its shape is an erratum.
    """
    require_tensor("x", x)
    require_rank("x", x, 2)
    return x.transpose(0, 1)


# --- §2.3.5 Geometric interpretation -------------------------------------------------------


def vector_add(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """§2.3.5: adding 2D points chains their arrows: [0.5, 1] + [1, 0.25] = [1.5, 1.25]."""
    require_tensor("a", a)
    require_tensor("b", b)
    if a.shape != b.shape:
        raise ValueError(
            f"vector_add needs a and b of the same shape, got {shape_str(a.shape)} "
            f"and {shape_str(b.shape)}"
        )
    return a + b


def rotation_matrix(
    theta: float,
    *,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """§2.3.5: the chapter's R = [u, v], u = [cos θ, sin θ], v = [-sin θ, cos θ].

    Convention: u and v are the *rows* of R and points are row vectors, as in the
    book's ``dot(input, W)``; then ``dot(x, R)`` rotates x counter-clockwise by θ
    (radians), mapping [1, 0] to u and [0, 1] to v. For column vectors use ``R.T @ x``.
    """
    c, s = math.cos(theta), math.sin(theta)
    return torch.tensor([[c, s], [-s, c]], dtype=dtype, device=device)


def rotate(points: torch.Tensor, theta: float) -> torch.Tensor:
    """§2.3.5: rotate 2D row vectors (shape (..., 2)) counter-clockwise by θ radians."""
    require_tensor("points", points)
    if points.ndim < 1 or points.shape[-1] != 2:
        raise ValueError(f"points must have shape (..., 2), got {shape_str(points.shape)}")
    dtype = points.dtype if points.dtype.is_floating_point else torch.float64
    r = rotation_matrix(theta, dtype=dtype, device=points.device)
    return dot(points.to(dtype), r)
