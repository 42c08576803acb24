"""§2.1 A first look at a neural network, in idiomatic PyTorch but Keras-faithful.

The book's model is ``keras.Sequential([Dense(512, "relu"), Dense(10, "softmax")])``
compiled with ``optimizer="rmsprop"`` and ``loss="sparse_categorical_crossentropy"``, then
``fit(train_images, train_labels, epochs=5, batch_size=128)``. To get the book's numbers
in torch the defaults must be Keras', not torch's:

- Dense kernels use glorot_uniform, U(-limit, limit) with limit = sqrt(6 / (fan_in +
  fan_out)), and zero biases (torch's Linear default is a scaled Kaiming uniform);
- Keras 2.6's default RMSprop (lr 1e-3, rho 0.9, epsilon 1e-7 added *outside* the square
  root, no momentum) equals ``torch.optim.RMSprop(lr=1e-3, alpha=0.9, eps=1e-7)``;
  torch's own default alpha is 0.99 and eps 1e-8;
- ``fit`` computes the cross-entropy from the softmax's logits, so the module outputs
  logits and ``predict`` applies the softmax;
- ``fit`` reshuffles the training data every epoch: 469 steps per epoch at batch 128 on
  60,000 samples, 2,345 over 5 epochs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from dl_ch2._checks import DeviceLike, require_positive_int, require_tensor, resolve_device
from dl_ch2.batch_generator import num_batches

__all__ = [
    "KERAS_RMSPROP_DEFAULTS",
    "build_first_example_model",
    "glorot_uniform_",
    "glorot_uniform_limit",
    "keras_rmsprop",
    "predict",
    "train_first_example",
]

#: Keras 2.6 ``RMSprop()`` defaults in torch's names.
KERAS_RMSPROP_DEFAULTS: dict[str, float] = {"lr": 1e-3, "alpha": 0.9, "eps": 1e-7}


def glorot_uniform_limit(fan_in: int, fan_out: int) -> float:
    """Keras' glorot_uniform bound, ``sqrt(6 / (fan_in + fan_out))``."""
    require_positive_int("fan_in", fan_in)
    require_positive_int("fan_out", fan_out)
    return math.sqrt(6.0 / (fan_in + fan_out))


def glorot_uniform_(weight: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Fill a Linear weight of shape (out, in) from U(-limit, limit), in place.

    Draws on the generator's device (CPU by default) and copies, so one seed gives the same
    weights on every device.
    """
    fan_out, fan_in = weight.shape
    limit = glorot_uniform_limit(fan_in, fan_out)
    gen_device = generator.device if generator is not None else torch.device("cpu")
    u = torch.rand(weight.shape, generator=generator, dtype=weight.dtype, device=gen_device)
    with torch.no_grad():
        weight.copy_(u * (2 * limit) - limit)
    return weight


def build_first_example_model(
    *,
    device: DeviceLike = None,
    dtype: torch.dtype = torch.float32,
    generator: torch.Generator | None = None,
) -> nn.Sequential:
    """§2.1: Linear(784, 512) -> ReLU -> Linear(512, 10), Keras init; outputs logits."""
    dev = resolve_device(device)
    hidden = nn.Linear(28 * 28, 512, device=dev, dtype=dtype)
    output = nn.Linear(512, 10, device=dev, dtype=dtype)
    for layer in (hidden, output):
        glorot_uniform_(layer.weight, generator)
        nn.init.zeros_(layer.bias)
    model = nn.Sequential(hidden, nn.ReLU(), output)
    return model


def keras_rmsprop(params: Any, **overrides: float) -> torch.optim.RMSprop:
    """Keras 2.6's default ``RMSprop`` as a ``torch.optim.RMSprop``."""
    kwargs = {**KERAS_RMSPROP_DEFAULTS, **overrides}
    return torch.optim.RMSprop(params, **kwargs)  # type: ignore[arg-type]


def predict(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Class probabilities (softmax of the logits); each row sums to 1."""
    with torch.no_grad():
        return torch.softmax(model(images), dim=-1)


def train_first_example(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    epochs: int = 5,
    batch_size: int = 128,
    optimizer: torch.optim.Optimizer | None = None,
    generator: torch.Generator | None = None,
    on_epoch_end: Callable[[int, float], Any] | None = None,
) -> list[float]:
    """§2.1: Keras-style ``fit``: reshuffle each epoch, cross-entropy on logits, RMSprop.

    Returns the mean training loss of each epoch.
    """
    require_tensor("images", images)
    require_tensor("labels", labels)
    require_positive_int("epochs", epochs)
    require_positive_int("batch_size", batch_size)
    if len(images) != len(labels) or len(images) == 0:
        raise ValueError(
            f"images and labels must be non-empty and of equal length, got {len(images)} "
            f"and {len(labels)}"
        )
    opt = optimizer if optimizer is not None else keras_rmsprop(model.parameters())
    n = len(images)
    steps = num_batches(n, batch_size)
    labels = labels.long()
    epoch_losses: list[float] = []
    for epoch in range(epochs):
        perm = torch.randperm(n, generator=generator).to(images.device)
        shuffled_x, shuffled_y = images.index_select(0, perm), labels.index_select(0, perm)
        total = torch.zeros((), dtype=torch.float64, device=images.device)
        for k in range(steps):
            xb = shuffled_x[k * batch_size : (k + 1) * batch_size]
            yb = shuffled_y[k * batch_size : (k + 1) * batch_size]
            loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
            total += loss.detach() * len(xb)
        mean_loss = float(total) / n
        epoch_losses.append(mean_loss)
        if on_epoch_end is not None:
            on_epoch_end(epoch, mean_loss)
    return epoch_losses
