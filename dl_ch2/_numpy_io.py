"""NumPy in: the arrays the book passes to ``fit``, ``evaluate`` and ``predict`` (§2.1).

The notebook hands ``model.fit`` and its own ``fit`` the NumPy arrays of
``mnist.load_data()`` and its preprocessing. Here such arrays become tensors once, at the
top of each function, on the model's device; tensors (and anything else) pass through
untouched, so the checks that follow name a wrong dtype, shape or device as before.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

__all__ = ["tensors_from_numpy"]


def tensors_from_numpy(model: object, images: Any, labels: Any = None) -> tuple[Any, Any]:
    """``(images, labels)`` with each NumPy array made a tensor on ``model``'s device.

    Images keep their dtype (uint8 images are then refused, naming §2.1's ``preprocess``);
    integer labels become int64, as Keras casts them. The arrays are not written: a
    writable one is shared (``torch.from_numpy``), a read-only one copied.
    """
    device = _device_of(model)
    return _convert("images", images, device), _convert("labels", labels, device, labels=True)


def _device_of(model: object) -> torch.device:
    """The device of the model's first weight (``model.weights`` when it is the book's
    list, else its parameters: an attribute of one's own called ``weights`` is not it)."""
    weights = getattr(model, "weights", None)
    if not isinstance(weights, list | tuple):
        params = model.parameters() if isinstance(model, torch.nn.Module) else ()
        weights = list(params)
    for w in weights:
        if isinstance(w, torch.Tensor):
            return w.device
    return torch.device("cpu")


def _convert(name: str, value: Any, device: torch.device, labels: bool = False) -> Any:
    if not isinstance(value, np.ndarray):
        return value
    array = value if value.flags.writeable else value.copy()
    if labels and np.issubdtype(array.dtype, np.integer):
        array = array.astype(np.int64, copy=False)
    try:
        tensor = torch.from_numpy(np.ascontiguousarray(array))
    except TypeError as exc:  # object, string or other dtypes torch has no match for
        raise TypeError(
            f"{name}: a NumPy array of dtype {array.dtype} has no torch dtype; pass numbers "
            f"({name}.astype('float32') for images, int64 class indices for labels)"
        ) from exc
    return tensor.to(device)
