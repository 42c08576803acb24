"""Argument checks shared by the port.

The book guards its naive functions with ``assert``; those vanish under ``python -O``,
so every check here raises a ValueError or TypeError that names the argument and shape.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence

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


def require_learning_rate(value: object, name: str = "learning_rate") -> float:
    """A real number, positive and finite (a string, a bool, NaN, 0 or -1 is refused)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} ({value!r})")
    rate = float(value)
    if not (math.isfinite(rate) and rate > 0):
        raise ValueError(f"{name} must be positive and finite, got {value!r}")
    return rate


def require_float_dtype(name: str, dtype: torch.dtype) -> torch.dtype:
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"{name} must be a floating-point torch.dtype, got {dtype!r}")
    return dtype


def shape_str(shape: Sequence[int] | torch.Size) -> str:
    return str(tuple(int(s) for s in shape))


def require_images(
    value: object, weights: Sequence[torch.Tensor], name: str = "images"
) -> torch.Tensor:
    """Floating-point images of the model's dtype and on its device (the first weight's)."""
    images = require_tensor(name, value)
    dtype = weights[0].dtype
    require_device(name, images, weights[0].device)
    if images.dtype != dtype:
        hint = (
            "scale them to floats in [0, 1] first (§2.1's preprocess)"
            if not images.dtype.is_floating_point
            else f"convert them with {name}.to({dtype})"
        )
        raise TypeError(
            f"{name} have dtype {images.dtype} but the model's weights are {dtype}; {hint}"
        )
    return images


def require_device(name: str, x: torch.Tensor, device: torch.device) -> None:
    """``x`` holds values (not on the meta device) and sits on ``device``."""
    if x.device.type == "meta":
        raise ValueError(
            f"{name} are on the meta device: they have a shape {shape_str(x.shape)} but no "
            f"values; create them on {device} (the model's device)"
        )
    if x.device != device:
        raise ValueError(
            f"{name} are on {x.device} but the model's weights on {device}; move them with "
            f"{name}.to({str(device)!r})"
        )


def require_labels(value: object, images: torch.Tensor, what: str = "train on") -> torch.Tensor:
    """1-D integer class indices, one per image, none negative (one host sync).

    The upper bound needs the model's width: the loss checks it on every batch.
    """
    labels = require_tensor("labels", value)
    if labels.device.type == "meta":
        require_device("labels", labels, images.device)
    if labels.dtype.is_floating_point or labels.dtype.is_complex or labels.dtype == torch.bool:
        raise TypeError(f"labels must hold integer class indices, got dtype {labels.dtype}")
    if labels.ndim != 1 or len(labels) != len(images):
        raise ValueError(
            f"labels must have shape (N,) = ({len(images)},) to match images "
            f"{shape_str(images.shape)}, got {shape_str(labels.shape)}"
        )
    if len(labels) == 0:
        raise ValueError(f"images and labels hold zero samples: nothing to {what}")
    lowest = int(labels.min())
    if lowest < 0:
        raise ValueError(f"labels must be class indices >= 0, got {lowest}")
    return labels


def require_label_range(labels: torch.Tensor, classes: int) -> None:
    """Every label in ``[0, classes)`` (one host sync)."""
    lo, hi = (int(v) for v in torch.aminmax(labels))
    if lo < 0 or hi >= classes:
        raise ValueError(
            f"labels must lie in [0, {classes}) for a model with {classes} outputs, "
            f"got values from {lo} to {hi}"
        )


def require_training_inputs(
    model: Callable[[torch.Tensor], torch.Tensor],
    weights: Sequence[torch.Tensor],
    images: object,
    labels: object,
    epochs: object,
    batch_size: object,
) -> None:
    """Everything ``fit`` and ``train_first_example`` check before any weight moves.

    ``epochs`` and ``batch_size`` positive ints; ``images`` of the weights' dtype and
    device; ``labels`` 1-D integer class indices on the images' device, one per image, in
    ``[0, classes)``, where ``classes`` is the model's width, read from one forward pass on
    one image under ``no_grad`` (a forward hook sees that call too).
    """
    require_positive_int("epochs", epochs)
    require_positive_int("batch_size", batch_size)
    images = require_images(images, weights)
    labels = require_labels(labels, images)
    if labels.device != images.device:
        require_device("labels", labels, images.device)
    with torch.no_grad():
        classes = model(images[:1]).shape[-1]
    require_label_range(labels, classes)


def require_probabilities(predictions: torch.Tensor) -> None:
    """Rows in [0, 1] that sum to 1 (to the dtype's rounding): what the book's default loss
    takes. A logits model refused here would train wrong without a word (the loss clips
    what it takes for probabilities). Non-finite rows are left to the loss's own checks.
    """
    p = predictions.detach().double()
    if p.ndim != 2 or not bool(torch.isfinite(p).all()):
        return
    tol = max(1e-3, 16 * torch.finfo(predictions.dtype).eps)
    lo, hi, sums = p.min(dim=1).values, p.max(dim=1).values, p.sum(dim=1)
    bad = (lo < -tol) | (hi > 1 + tol) | ((sums - 1).abs() > tol)
    if bool(bad.any()):
        i = int(bad.nonzero()[0, 0])
        raise ValueError(
            f"the model's outputs are not probabilities (rows must lie in [0, 1] and sum to "
            f"1; row {i} lies in [{float(lo[i]):.3g}, {float(hi[i]):.3g}] and sums to "
            f"{float(sums[i]):.4g}), but the default loss_fn is the book's crossentropy on "
            'probabilities: for a model that outputs logits pass loss_fn="from_logits" (or '
            "any loss_fn(predictions, labels), e.g. torch.nn.functional.cross_entropy), or "
            "end the model with a softmax"
        )
