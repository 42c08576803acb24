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
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dl_ch2._checks import (
    DeviceLike,
    require_images,
    require_label_range,
    require_labels,
    require_learning_rate,
    require_positive_int,
    resolve_device,
)
from dl_ch2.batch_generator import num_batches
from dl_ch2.training_loop import check_finite

if TYPE_CHECKING:
    from dl_ch2.distributed import DataParallel

__all__ = [
    "KERAS_RMSPROP_DEFAULTS",
    "build_first_example_model",
    "first_example_step",
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
    learning_rate: float | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    generator: torch.Generator | None = None,
    on_epoch_end: Callable[[int, float], Any] | None = None,
    compile: bool = False,
    data_parallel: DataParallel | None = None,
) -> list[float]:
    """§2.1: Keras-style ``fit``: reshuffle each epoch, cross-entropy on logits, RMSprop.

    Each batch is one ``first_example_step``: autograd (``loss.backward()``) and
    ``optimizer.step()``, by default ``keras_rmsprop(model.parameters(), lr=learning_rate)``
    (Keras 2.6's RMSprop; ``learning_rate`` defaults to its 1e-3). Returns the mean training
    loss of each epoch. Labels are checked once, up front (1-D integer class indices in
    ``[0, classes)``), so a bad label raises before any weight moves. Losses stay on the
    device and are checked every 100 batches and at each epoch's end: a NaN or infinite
    loss (a NaN pixel, say) raises ``NonFiniteLossError`` naming the epoch and batch.

    ``compile=True`` runs the same step through ``torch.compile`` (if compiling fails, a
    one-line warning says so and training runs eagerly).

    ``data_parallel`` (a ``dl_ch2.distributed.DataParallel``, under torchrun): every rank
    passes the same data and shuffling seed, and each step is
    ``data_parallel.first_example_step``, this step on the rank's shard of the batch with
    the gradients all-reduced before ``optimizer.step()``.
    """
    require_positive_int("epochs", epochs)
    require_positive_int("batch_size", batch_size)
    opt: torch.optim.Optimizer
    if optimizer is None:
        opt = keras_rmsprop(
            model.parameters(),
            lr=require_learning_rate(1e-3 if learning_rate is None else learning_rate),
        )
    elif learning_rate is not None:
        raise ValueError("pass learning_rate or optimizer, not both (the optimizer has its own)")
    else:
        opt = optimizer
        for i, group in enumerate(opt.param_groups):
            lr = group["lr"]
            lr = float(lr) if isinstance(lr, torch.Tensor) and lr.numel() == 1 else lr
            require_learning_rate(lr, f"the optimizer's learning_rate (param group {i})")
    params = [p for group in opt.param_groups for p in group["params"]]
    if not params:
        raise ValueError("the model has no parameters to train")
    require_images(images, params)
    if isinstance(labels, torch.Tensor) and labels.device != images.device:
        raise ValueError(
            f"labels are on {labels.device} but images on {images.device}; move both to "
            "the model's device"
        )
    require_labels(labels, images)
    with torch.no_grad():  # the model's width, to check every label once
        classes = model(images[:1]).shape[-1]
    require_label_range(labels, classes)
    step: Callable[..., torch.Tensor] = first_example_step
    if data_parallel is not None:
        if compile:
            raise ValueError("compile=True is not supported with data_parallel; pick one")
        step = data_parallel.first_example_step
    if compile:
        from dl_ch2._compile import CompiledStep

        step = CompiledStep(
            first_example_step, model, opt, images.device, "the first example's step"
        )
    n = len(images)
    steps = num_batches(n, batch_size)
    sizes = torch.tensor(
        [min(batch_size, n - k * batch_size) for k in range(steps)],
        dtype=torch.float64,
        device=images.device,
    )
    labels = labels.long()
    epoch_losses: list[float] = []
    for epoch in range(epochs):
        perm = torch.randperm(n, generator=generator).to(images.device)
        losses: list[torch.Tensor] = []  # on the device; checked every 100 batches
        checked = 0
        for k in range(steps):
            idx = perm[k * batch_size : (k + 1) * batch_size]
            losses.append(
                step(model, opt, images.index_select(0, idx), labels.index_select(0, idx))
            )
            if k % 100 == 0 or k == steps - 1:
                check_finite(losses, checked, epoch)
                checked = k + 1
        mean_loss = float((torch.stack(losses).double() * sizes).sum()) / n
        epoch_losses.append(mean_loss)
        if on_epoch_end is not None:
            on_epoch_end(epoch, mean_loss)
    return epoch_losses


def first_example_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    images_batch: torch.Tensor,
    labels_batch: torch.Tensor,
    *,
    gradient_transform: Callable[[list[torch.Tensor]], Sequence[torch.Tensor]] | None = None,
) -> torch.Tensor:
    """One step of Keras' ``fit`` for the first example; returns the batch's mean loss.

    Cross-entropy on the logits (Keras ``fit`` finds the softmax's logits), backward,
    ``optimizer.step()``. ``gradient_transform``, if given, maps the optimised parameters'
    gradients (a missing one as zeros) before the step (data-parallel training
    all-reduces them there).
    """
    logits = model(images_batch)
    loss = F.cross_entropy(logits, labels_batch)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()  # type: ignore[no-untyped-call]
    if gradient_transform is not None:
        params = [p for group in optimizer.param_groups for p in group["params"]]
        grads = [torch.zeros_like(p) if p.grad is None else p.grad for p in params]
        for p, g in zip(params, gradient_transform(grads), strict=True):
            p.grad = g
    optimizer.step()
    return loss.detach()


def preprocess(images: np.ndarray) -> np.ndarray:
    """§2.1 "Preparing the image data": reshape to (N, 784) and scale to float32 in [0, 1]."""
    if not isinstance(images, np.ndarray):
        raise TypeError(f"images must be a NumPy array, got {type(images).__name__}")
    if images.ndim != 3 or images.shape[1:] != (28, 28):
        raise ValueError(f"images must have shape (N, 28, 28), got {images.shape}")
    return images.reshape((len(images), 28 * 28)).astype("float32") / 255
