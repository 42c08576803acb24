"""§2.1 A first look at a neural network, in idiomatic PyTorch but Keras-faithful.

The book's model is ``keras.Sequential([Dense(512, "relu"), Dense(10, "softmax")])``
compiled with ``optimizer="rmsprop"`` and ``loss="sparse_categorical_crossentropy"``, then
``fit(train_images, train_labels, epochs=5, batch_size=128)``. To get the book's numbers
in torch the defaults must be Keras', not torch's:

- Dense kernels use glorot_uniform, U(-limit, limit) with limit = sqrt(6 / (fan_in +
  fan_out)), and zero biases (torch's Linear default is a scaled Kaiming uniform);
- Keras 2.6's default RMSprop (lr 1e-3, rho 0.9, epsilon 1e-7 added *outside* the square
  root, no momentum) equals ``torch.optim.RMSprop(lr=1e-3, alpha=0.9, eps=1e-7)``;
  torch's own default alpha is 0.99 and eps 1e-8. TF 2.11+ and Keras 3 add epsilon
  *inside* the root (``keras_rmsprop(params, "keras-3")``): a reader running the book
  today gets that one;
- ``fit`` computes the cross-entropy from the softmax's logits, so the module outputs
  logits and ``predict`` applies the softmax;
- ``fit`` reshuffles the training data every epoch: 469 steps per epoch at batch 128 on
  60,000 samples, 2,345 over 5 epochs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dl_ch2._checks import (
    DeviceLike,
    require_learning_rate,
    require_positive_int,
    require_training_inputs,
    resolve_device,
)
from dl_ch2._compile import CompiledStep
from dl_ch2._numpy_io import tensors_from_numpy
from dl_ch2._steps import BatchStep, GradientTransform, StepWrapper
from dl_ch2.batch_generator import num_batches
from dl_ch2.loss_monitor import LossMonitor

__all__ = [
    "KERAS_RMSPROP_DEFAULTS",
    "RMSPROP_VARIANTS",
    "Keras3RMSprop",
    "build_first_example_model",
    "example_step",
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


#: The two RMSprops a reader of §2.1 meets, by name: what the book ran (Keras 2.6, TF up
#: to 2.10: epsilon added *outside* the square root) and what TF 2.11+ and Keras 3 run
#: (epsilon added to the mean square, *inside* the root).
RMSPROP_VARIANTS = ("keras-2.6", "keras-3")


def keras_rmsprop(
    params: Any, variant: str = "keras-2.6", **overrides: float
) -> torch.optim.Optimizer:
    """§2.1's ``optimizer="rmsprop"`` as a torch optimizer, Keras' defaults included.

    ``variant="keras-2.6"`` (the book's): ``w -= lr * g / (sqrt(v) + eps)``, which is
    ``torch.optim.RMSprop(lr=1e-3, alpha=0.9, eps=1e-7)``. ``variant="keras-3"`` (TF 2.11+
    and Keras 3): ``w -= lr * g / sqrt(v + eps)`` (:class:`Keras3RMSprop`). Both keep
    ``v = rho * v + (1 - rho) * g**2`` from ``v = 0``; ``overrides`` use torch's names.
    """
    kwargs = {**KERAS_RMSPROP_DEFAULTS, **overrides}
    if variant == "keras-2.6":
        return torch.optim.RMSprop(params, **kwargs)  # type: ignore[arg-type]
    if variant == "keras-3":
        return Keras3RMSprop(params, **kwargs)
    raise ValueError(f"variant must be one of {', '.join(RMSPROP_VARIANTS)}, got {variant!r}")


class Keras3RMSprop(torch.optim.Optimizer):
    """Keras 3's (and TF 2.11+'s) default RMSprop: epsilon inside the square root.

    ``v = alpha * v + (1 - alpha) * g**2; w -= lr * g / sqrt(v + eps)`` (torch's names:
    ``alpha`` is Keras' ``rho``). Defaults as Keras': lr 1e-3, alpha 0.9, eps 1e-7.
    """

    def __init__(
        self, params: Any, lr: float = 1e-3, alpha: float = 0.9, eps: float = 1e-7
    ) -> None:
        require_learning_rate(lr, "lr")
        if not 0.0 <= alpha < 1.0:
            raise ValueError(f"alpha must lie in [0, 1), got {alpha}")
        if not eps >= 0.0:
            raise ValueError(f"eps must be >= 0, got {eps}")
        super().__init__(params, {"lr": lr, "alpha": alpha, "eps": eps})

    @torch.no_grad()  # type: ignore[untyped-decorator, misc]
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["square_avg"] = torch.zeros_like(p)
                v = state["square_avg"]
                v.mul_(group["alpha"]).addcmul_(p.grad, p.grad, value=1 - group["alpha"])
                p.addcdiv_(p.grad, (v + group["eps"]).sqrt(), value=-group["lr"])
        return loss


def predict(model: nn.Module, images: torch.Tensor | np.ndarray) -> torch.Tensor:
    """§2.1 ``model.predict``: class probabilities (softmax of the logits); rows sum to 1.

    ``images`` may be a NumPy array (made a tensor once, on the model's device). The model
    runs under ``torch.inference_mode()``, so the result records no autograd history and,
    on the CPU, ``predict(model, x).numpy()`` works as the book's ``predictions`` do.
    """
    images, _ = tensors_from_numpy(model, images)
    with torch.inference_mode():
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
    data_parallel: StepWrapper | None = None,
    rmsprop: str = "keras-2.6",
    keras_accuracy: list[float] | None = None,
    print_fn: Callable[[str], Any] | None = print,
) -> list[float]:
    """§2.1: Keras-style ``fit``: reshuffle each epoch, cross-entropy on logits, RMSprop.

    Each batch is one ``first_example_step`` (``loss.backward()``, ``optimizer.step()``),
    chosen once before the loop (:func:`example_step`: compiled if ``compile``,
    data-parallel if ``data_parallel``). The optimizer is by default
    ``keras_rmsprop(model.parameters(), rmsprop, lr=learning_rate)``: ``rmsprop`` names
    the book's Keras 2.6 RMSprop (``"keras-2.6"``) or TF 2.11+/Keras 3's (``"keras-3"``).
    Every input is checked before any weight moves, as ``fit`` checks it; losses stay on
    the device and are checked every 100 batches and at each epoch's end (a NaN pixel
    raises ``NonFiniteLossError`` naming the epoch and batch). Returns each epoch's mean
    training loss; ``on_epoch_end(epoch, mean_loss)`` runs after each epoch.
    ``keras_accuracy`` gets each epoch's accuracy as Keras prints it (the book's ``acc:
    0.9273``): the running mean over the epoch's batches, each scored by its own forward
    pass before its update, not the whole training set's accuracy after the epoch.
    ``print_fn`` (``None`` for silence) gets Keras' line: ``Epoch 1/5: 469 steps - loss:
    0.2580 - accuracy: 0.9243``. NumPy ``images``/``labels`` become tensors once.
    """
    images, labels = tensors_from_numpy(model, images, labels)
    opt = _optimizer(model, learning_rate, optimizer, rmsprop)
    params = [p for group in opt.param_groups for p in group["params"]]
    if not params:
        raise ValueError("the model has no parameters to train")
    require_training_inputs(model, params, images, labels, epochs, batch_size)
    count = keras_accuracy is not None or print_fn is not None
    correct = torch.zeros((), dtype=torch.int64) if count else None
    step = example_step(model, opt, compile=compile, data_parallel=data_parallel, correct=correct)
    monitor = LossMonitor(params, divergence=False)
    n, labels = len(images), labels.long()
    steps = num_batches(n, batch_size)
    sizes = [min(batch_size, n - k * batch_size) for k in range(steps)]
    sizes_t = torch.tensor(sizes, dtype=torch.float64, device=images.device)
    epoch_losses: list[float] = []
    for epoch in range(epochs):
        perm = torch.randperm(n, generator=generator).to(images.device)
        losses = _one_epoch(step, monitor, images, labels, perm, batch_size, epoch)
        epoch_losses.append(float((torch.stack(losses).double() * sizes_t).sum()) / n)
        if correct is not None:
            accuracy = _epoch_accuracy(correct, n, data_parallel is not None)
            _keras_line(print_fn, keras_accuracy, epoch, epochs, steps, epoch_losses, accuracy)
        if on_epoch_end is not None:
            on_epoch_end(epoch, epoch_losses[-1])
    return epoch_losses


def _one_epoch(
    step: BatchStep,
    monitor: LossMonitor,
    images: torch.Tensor,
    labels: torch.Tensor,
    perm: torch.Tensor,
    batch_size: int,
    epoch: int,
) -> list[torch.Tensor]:
    """One epoch's steps over the batches of ``perm``; their losses, on the device."""
    steps = num_batches(len(images), batch_size)
    losses: list[torch.Tensor] = []  # checked every 100 batches and at the epoch's end
    for k in range(steps):
        idx = perm[k * batch_size : (k + 1) * batch_size]
        losses.append(step(images.index_select(0, idx), labels.index_select(0, idx)))
        if k % 100 == 0 or k == steps - 1:
            monitor.check(losses, epoch)
    return losses


def _keras_line(
    print_fn: Callable[[str], Any] | None,
    keras_accuracy: list[float] | None,
    epoch: int,
    epochs: int,
    steps: int,
    epoch_losses: list[float],
    accuracy: float,
) -> None:
    """Record the epoch's Keras accuracy and print Keras' line for the epoch."""
    if keras_accuracy is not None:
        keras_accuracy.append(accuracy)
    if print_fn is not None:
        print_fn(
            f"Epoch {epoch + 1}/{epochs}: {steps} steps - loss: {epoch_losses[-1]:.4f}"
            f" - accuracy: {accuracy:.4f}"
        )


def _optimizer(
    model: nn.Module,
    learning_rate: float | None,
    optimizer: torch.optim.Optimizer | None,
    rmsprop: str,
) -> torch.optim.Optimizer:
    """The first example's optimizer: Keras' RMSprop unless one is given, checked."""
    if optimizer is None:
        lr = require_learning_rate(1e-3 if learning_rate is None else learning_rate)
        return keras_rmsprop(model.parameters(), rmsprop, lr=lr)
    if learning_rate is not None:
        raise ValueError("pass learning_rate or optimizer, not both (the optimizer has its own)")
    for i, group in enumerate(optimizer.param_groups):
        lr = group["lr"]
        lr = float(lr) if isinstance(lr, torch.Tensor) and lr.numel() == 1 else lr
        require_learning_rate(lr, f"the optimizer's learning_rate (param group {i})")
    return optimizer


def _epoch_accuracy(correct: torch.Tensor, n: int, data_parallel: bool) -> float:
    """The epoch's running accuracy from its count of correct predictions, then reset.

    Data-parallel, each rank counted its shards: the counts are summed over the ranks.
    """
    if data_parallel and torch.distributed.is_available() and torch.distributed.is_initialized():
        total = correct.clone()
        torch.distributed.all_reduce(total)
        correct.zero_()
        return int(total) / n
    value = int(correct) / n
    correct.zero_()
    return value


def example_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    *,
    compile: bool = False,
    data_parallel: StepWrapper | None = None,
    correct: torch.Tensor | None = None,
) -> BatchStep:
    """``first_example_step`` bound to its model and optimizer: ``loss = step(x, y)``.

    ``compile`` runs it through ``CompiledStep``; ``data_parallel.wrap`` makes it the
    step on this rank's shard with the gradients all-reduced before ``optimizer.step()``.
    ``correct`` (a 0-d int64 tensor), if given, counts each batch's correct predictions.
    """
    if data_parallel is not None and compile:
        raise ValueError("compile=True is not supported with data_parallel; pick one")
    step: Callable[..., torch.Tensor] = first_example_step
    if compile:
        params = [p for group in optimizer.param_groups for p in group["params"]]
        step = CompiledStep(
            first_example_step, model, optimizer, params[0].device, "the first example's step"
        )

    def bound(
        images_batch: torch.Tensor,
        labels_batch: torch.Tensor,
        transform: GradientTransform | None = None,
    ) -> torch.Tensor:
        return step(
            model,
            optimizer,
            images_batch,
            labels_batch,
            gradient_transform=transform,
            correct=correct,
        )

    if data_parallel is None:
        return bound
    return data_parallel.wrap(bound, [p for g in optimizer.param_groups for p in g["params"]])


def first_example_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    images_batch: torch.Tensor,
    labels_batch: torch.Tensor,
    *,
    gradient_transform: GradientTransform | None = None,
    correct: torch.Tensor | None = None,
) -> torch.Tensor:
    """One step of Keras' ``fit`` for the first example; returns the batch's mean loss.

    Cross-entropy on the logits (Keras ``fit`` finds the softmax's logits), backward,
    ``optimizer.step()``. ``gradient_transform``, if given, maps the optimised parameters'
    gradients (a missing one as zeros) before the step (data-parallel training
    all-reduces them there). ``correct``, if given, has the batch's number of correct
    predictions added to it, from this forward pass (Keras' ``accuracy`` metric).
    """
    logits = model(images_batch)
    if correct is not None:
        hits = (logits.detach().argmax(dim=1) == labels_batch).sum()
        correct.add_(hits.to(correct.device))
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
