"""§2.3 The naive loop operations in NumPy, as the book writes them (without ``assert``)."""

from __future__ import annotations

import numpy as np

from conformance.reference._checks import require_array, require_rank, shape_str

__all__ = [
    "naive_add",
    "naive_add_matrix_and_vector",
    "naive_matrix_dot",
    "naive_matrix_vector_dot",
    "naive_matrix_vector_dot_via_vector_dot",
    "naive_relu",
    "naive_vector_dot",
]


def _pair(x: object, y: object, rx: int, ry: int) -> tuple[np.ndarray, np.ndarray]:
    xa, ya = require_array("x", x), require_array("y", y)
    require_rank("x", xa, rx)
    require_rank("y", ya, ry)
    return xa, ya


def naive_relu(x: np.ndarray) -> np.ndarray:
    """§2.3.1: relu of a rank-2 array with loops; the input is copied, never mutated."""
    require_rank("x", require_array("x", x), 2)
    x = x.copy()
    for i in range(x.shape[0]):
        for j in range(x.shape[1]):
            if x[i, j] < 0:
                x[i, j] = 0
    return x


def naive_add(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """§2.3.1: element-wise sum of two rank-2 arrays of the same shape."""
    x, y = _pair(x, y, 2, 2)
    if x.shape != y.shape:
        raise ValueError(
            f"naive_add needs x and y of the same shape, got x {shape_str(x.shape)} "
            f"and y {shape_str(y.shape)}"
        )
    out = x.astype(np.result_type(x, y), copy=True)
    for i in range(x.shape[0]):
        for j in range(x.shape[1]):
            out[i, j] += y[i, j]
    return out


def naive_add_matrix_and_vector(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """§2.3.2: add y (n,) to every row of x (m, n)."""
    x, y = _pair(x, y, 2, 1)
    if x.shape[1] != y.shape[0]:
        raise ValueError(
            f"naive_add_matrix_and_vector needs x.shape[1] == y.shape[0], got x "
            f"{shape_str(x.shape)} and y {shape_str(y.shape)}"
        )
    out = x.astype(np.result_type(x, y), copy=True)
    for i in range(x.shape[0]):
        for j in range(x.shape[1]):
            out[i, j] += y[j]
    return out


def naive_vector_dot(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """§2.3.3: dot product of two vectors of equal length (a 0-d array)."""
    x, y = _pair(x, y, 1, 1)
    if x.shape[0] != y.shape[0]:
        raise ValueError(
            f"naive_vector_dot needs vectors of the same length, got x {shape_str(x.shape)} "
            f"and y {shape_str(y.shape)}"
        )
    z = np.zeros((), dtype=np.result_type(x, y))
    for i in range(x.shape[0]):
        z += x[i] * y[i]
    return z


def _matrix_vector(x: object, y: object, name: str) -> tuple[np.ndarray, np.ndarray]:
    xa, ya = _pair(x, y, 2, 1)
    if xa.shape[1] != ya.shape[0]:
        raise ValueError(
            f"{name} needs x.shape[1] == y.shape[0], got x {shape_str(xa.shape)} "
            f"and y {shape_str(ya.shape)}"
        )
    return xa, ya


def naive_matrix_vector_dot(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """§2.3.3: (m, n) . (n,) -> (m,) with two loops."""
    x, y = _matrix_vector(x, y, "naive_matrix_vector_dot")
    z = np.zeros(x.shape[0], dtype=np.result_type(x, y))
    for i in range(x.shape[0]):
        for j in range(x.shape[1]):
            z[i] += x[i, j] * y[j]
    return z


def naive_matrix_vector_dot_via_vector_dot(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """§2.3.3: the same product, one ``naive_vector_dot`` per row."""
    x, y = _matrix_vector(x, y, "naive_matrix_vector_dot_via_vector_dot")
    z = np.zeros(x.shape[0], dtype=np.result_type(x, y))
    for i in range(x.shape[0]):
        z[i] = naive_vector_dot(x[i, :], y)
    return z


def naive_matrix_dot(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """§2.3.3: (m, n) . (n, p) -> (m, p), each entry a row-column vector dot."""
    x, y = _pair(x, y, 2, 2)
    if x.shape[1] != y.shape[0]:
        raise ValueError(
            f"naive_matrix_dot needs x.shape[1] == y.shape[0], got x {shape_str(x.shape)} "
            f"and y {shape_str(y.shape)}"
        )
    z = np.zeros((x.shape[0], y.shape[1]), dtype=np.result_type(x, y))
    for i in range(x.shape[0]):
        for j in range(y.shape[1]):
            z[i, j] = naive_vector_dot(x[i, :], y[:, j])
    return z
