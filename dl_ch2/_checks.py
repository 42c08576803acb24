"""Argument checks shared by the port.

The book guards its naive functions with ``assert``; those vanish under ``python -O``,
so every check here raises a ValueError or TypeError that names the argument and shape.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

DeviceLike = torch.device | str | int | None


def resolve_device(device: DeviceLike = None) -> torch.device:
    """Turn ``device`` into a ``torch.device`` (CPU by default), refusing absent CUDA."""
    if device is None:
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device={device!r} is not a valid torch device: {exc}") from exc
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"device={device!r} asks for CUDA, but torch.cuda.is_available() is False "
                "(no GPU, or a CPU-only torch build); use device='cpu'"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(
                f"device={device!r}: only {torch.cuda.device_count()} CUDA device(s) present"
            )
    return dev


def require_tensor(name: str, x: object) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    return x


def require_rank(name: str, x: torch.Tensor, rank: int) -> None:
    if x.ndim != rank:
        raise ValueError(
            f"{name} must have rank {rank} (ndim == {rank}), got shape {tuple(x.shape)} "
            f"of rank {x.ndim}"
        )


def require_positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} ({value!r})")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return value


def require_float_dtype(name: str, dtype: torch.dtype) -> torch.dtype:
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"{name} must be a floating-point torch.dtype, got {dtype!r}")
    return dtype


def shape_str(shape: Sequence[int] | torch.Size) -> str:
    return str(tuple(int(s) for s in shape))
