"""Argument checks: the same ValueError/TypeError messages as the torch port."""

from __future__ import annotations

from typing import Any

import numpy as np


def shape_str(shape: Any) -> str:
    return str(tuple(int(s) for s in shape))


def require_array(name: str, x: object) -> np.ndarray:
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray, got {type(x).__name__}")
    return x


def require_rank(name: str, x: np.ndarray, rank: int) -> None:
    if x.ndim != rank:
        raise ValueError(
            f"{name} must have rank {rank} (ndim == {rank}), got shape {shape_str(x.shape)} "
            f"of rank {x.ndim}"
        )


def require_positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} ({value!r})")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return int(value)


def require_float_dtype(name: str, dtype: Any) -> np.dtype:
    dt = np.dtype(dtype)
    if dt.kind != "f":
        raise TypeError(f"{name} must be a floating-point dtype, got {dt}")
    return dt


def require_learning_rate(value: object, name: str = "learning_rate") -> float:
    """A real number, positive and finite: a bool, NaN, inf, 0 or a negative rate is refused."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} ({value!r})")
    rate = float(value)
    if not (np.isfinite(rate) and rate > 0):
        raise ValueError(f"{name} must be positive and finite, got {value!r}")
    return rate


def require_labels(labels: object, samples: int, classes: int) -> np.ndarray:
    """Integer class indices of shape (samples,), each in [0, classes)."""
    y = require_array("labels", labels)
    if y.dtype.kind not in "iu":
        raise TypeError(f"labels must hold integer class indices, got dtype {y.dtype}")
    if y.shape != (samples,):
        raise ValueError(f"labels must have shape ({samples},), got {shape_str(y.shape)}")
    if y.size and (int(y.min()) < 0 or int(y.max()) >= classes):
        raise ValueError(
            f"labels must lie in [0, {classes}) for a model with {classes} outputs, got "
            f"values from {int(y.min())} to {int(y.max())}"
        )
    return y
