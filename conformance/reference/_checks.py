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
