"""§2.5.2-2.5.4 Running one training step, the full training loop, evaluating the model.

``fit`` runs the book's ``one_training_step`` on every batch, for any ``nn.Module``:
autograd w.r.t. ``model.weights``, then ``update_weights``. ``fit(..., compile=True)`` runs
the same step through ``torch.compile``.

``update_weights`` updates the ``weights`` it is given. (Erratum: the notebook's first
version loops over the global ``model.weights`` instead of its ``weights`` argument.)
``fit`` honours ``batch_size``. (Erratum: the notebook's ``fit`` builds
``BatchGenerator(images, labels)`` and so always uses 128.)
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from dl_ch2._checks import (
    require_images,
    require_labels,
    require_learning_rate,
    require_positive_int,
    require_tensor,
    require_training_inputs,
    shape_str,
)
from dl_ch2._compile import CompiledStep
from dl_ch2._numpy_io import tensors_from_numpy
from dl_ch2._steps import BatchStep, GradientTransform, StepWrapper, then
from dl_ch2.batch_generator import BatchGenerator
from dl_ch2.loss_monitor import DivergenceError, LossMonitor, NonFiniteLossError
from dl_ch2.losses import sparse_categorical_crossentropy

__all__ = [
    "DivergenceError",  # from dl_ch2.loss_monitor, where fit's checks live
    "History",
    "NonFiniteLossError",
    "TrainingLog",
    "book_step",
    "evaluate",
    "fit",
    "one_training_step",
    "trainable_weights",
    "update_weights",
]


def update_weights(
    gradients: Sequence[torch.Tensor],
    weights: Sequence[torch.Tensor],
    learning_rate: float = 1e-3,
) -> None:
    """§2.5.2: ``w -= learning_rate * g`` in place for each pair, under ``no_grad``.

    Only the tensors in ``weights`` are touched.
    """
    gradients, weights = list(gradients), list(weights)
    if len(gradients) != len(weights):
        raise ValueError(
            f"got {len(gradients)} gradients for {len(weights)} weights; they must pair up"
        )
    for i, (g, w) in enumerate(zip(gradients, weights, strict=True)):
        if g.shape != w.shape:
            raise ValueError(
                f"gradients[{i}] has shape {shape_str(g.shape)} but weights[{i}] has "
                f"shape {shape_str(w.shape)}"
            )
    with torch.no_grad():
        for g, w in zip(gradients, weights, strict=True):
            w.sub_(g, alpha=learning_rate)  # the book's w.assign_sub(g * learning_rate)


def one_training_step(
    model: nn.Module,
    images_batch: torch.Tensor,
    labels_batch: torch.Tensor,
    learning_rate: float | torch.optim.Optimizer = 1e-3,
    optimizer: torch.optim.Optimizer | None = None,
    *,
    gradient_transform: GradientTransform | None = None,
) -> torch.Tensor:
    """§2.5.2: forward pass, mean loss, gradients w.r.t. ``model.weights``, update.

    The weights are ``model.weights`` where the model has it, else its parameters. Without
    ``optimizer`` the update is ``update_weights(gradients, weights, learning_rate)``; with
    one (also accepted in ``learning_rate``'s place), the gradients are put in ``.grad`` and
    ``optimizer.step()`` runs (``torch.optim.SGD(lr=1e-3)`` gives the same weights).
    ``gradient_transform``, if given, maps the list of gradients before the update (for
    example an all-reduce in data-parallel training). Returns the batch's mean loss, before
    the update, as a detached 0-d tensor (no host sync).
    """
    if isinstance(learning_rate, torch.optim.Optimizer):
        if optimizer is not None:
            raise ValueError("pass the optimizer once: as learning_rate or as optimizer")
        optimizer, learning_rate = learning_rate, 1e-3
    weights = trainable_weights(model)
    if optimizer is None:
        learning_rate = require_learning_rate(learning_rate)
    require_images(images_batch, weights, "images_batch")
    predictions = model(images_batch)
    per_sample_losses = sparse_categorical_crossentropy(labels_batch, predictions)
    average_loss = per_sample_losses.mean()
    gradients = list(torch.autograd.grad(average_loss, weights))
    if gradient_transform is not None:
        gradients = list(gradient_transform(gradients))
    if optimizer is None:
        update_weights(gradients, weights, learning_rate)
    else:
        for w, g in zip(weights, gradients, strict=True):
            w.grad = g
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return average_loss.detach()


def trainable_weights(model: nn.Module) -> list[torch.Tensor]:
    """``model.weights`` (or its parameters), each required to take gradients.

    A frozen weight (``requires_grad=False``) is a ValueError naming it: the book's step
    differentiates w.r.t. every weight it is given.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    weights = getattr(model, "weights", None)
    weights = list(model.parameters()) if weights is None else list(weights)
    if not weights:
        raise ValueError(f"model ({type(model).__name__}) has no weights to train")
    for i, w in enumerate(weights):
        if not w.requires_grad:
            names = {id(p): n for n, p in model.named_parameters()}
            name = names.get(id(w), "?")
            raise ValueError(
                f"model.weights[{i}] ({name!r}, shape {shape_str(w.shape)}) has "
                "requires_grad=False: the book's step trains every weight it is given; "
                "unfreeze it or leave it out of model.weights"
            )
    return weights


@dataclass
class History:
    """What ``fit`` returns: per-batch losses, one list per epoch."""

    batch_losses: list[list[float]] = field(default_factory=list)

    @property
    def epoch_losses(self) -> list[float]:
        """Mean batch loss of each epoch."""
        return [sum(e) / len(e) for e in self.batch_losses]


def fit(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    epochs: int,
    batch_size: int = 128,
    *,
    learning_rate: float = 1e-3,
    optimizer: torch.optim.Optimizer | None = None,
    compile: bool = False,
    shuffle: bool = False,
    generator: torch.Generator | None = None,
    log_every: int = 100,
    print_fn: Callable[[str], Any] | None = print,
    progress: bool | None = None,
    on_epoch_end: Callable[[int, list[float]], Any] | None = None,
    gradient_transform: GradientTransform | None = None,
    data_parallel: StepWrapper | None = None,
) -> History:
    """§2.5.3: the full training loop, ``one_training_step`` on every batch.

    The notebook's loop. Its step is chosen once, before it (:func:`book_step`: compiled if
    ``compile``, data-parallel under torchrun if ``data_parallel``, a ``DataParallel``);
    :class:`TrainingLog` prints its lines through ``print_fn`` (``loss at batch K`` every
    ``log_every`` batches; a tqdm bar on a terminal, or as ``progress`` says). Batches come
    from a fresh ``BatchGenerator`` per epoch (in order unless ``shuffle``). Every input is
    checked before any weight moves; at each log point a ``LossMonitor`` raises
    ``NonFiniteLossError`` on a NaN/inf loss and ``DivergenceError`` on a diverged run.
    ``on_epoch_end(epoch, batch_losses)`` runs after each epoch.
    NumPy ``images`` and ``labels`` (the book's) become tensors once, on the model's device.
    """
    images, labels = tensors_from_numpy(model, images, labels)
    weights = trainable_weights(model)
    require_positive_int("log_every", log_every)
    require_training_inputs(model, weights, images, labels, epochs, batch_size)
    step = book_step(model, learning_rate, optimizer, gradient_transform, compile, data_parallel)
    log, monitor, history = (
        TrainingLog(print_fn, log_every, progress),
        LossMonitor(weights),
        History(),
    )
    for epoch_counter in range(epochs):
        log.epoch(epoch_counter)
        batch_generator = BatchGenerator(
            images, labels, batch_size, shuffle=shuffle, generator=generator
        )
        losses: list[torch.Tensor] = []  # stay on the device; checked at log points
        for batch_counter in range(batch_generator.num_batches):
            images_batch, labels_batch = batch_generator.next()
            losses.append(step(images_batch, labels_batch))
            if log.at_log_point(batch_counter, batch_generator.num_batches):
                monitor.check(losses, epoch_counter)
                log.loss(batch_counter, losses[-1])
        log.end_epoch()
        history.batch_losses.append(torch.stack(losses).double().tolist())
        if on_epoch_end is not None:
            on_epoch_end(epoch_counter, history.batch_losses[-1])
    return history


def book_step(
    model: nn.Module,
    learning_rate: float,
    optimizer: torch.optim.Optimizer | None = None,
    gradient_transform: GradientTransform | None = None,
    compile: bool = False,
    data_parallel: StepWrapper | None = None,
) -> BatchStep:
    """``one_training_step`` bound to its model and optimizer: ``loss = step(x, y)``.

    ``compile`` runs it through ``CompiledStep`` (``torch.compile``, eager if compiling
    fails); ``data_parallel.wrap`` makes it the step on this rank's shard with the
    gradients all-reduced before ``gradient_transform``. The two do not combine.
    """
    weights = trainable_weights(model)
    if optimizer is None:
        learning_rate = require_learning_rate(learning_rate)
    if data_parallel is not None and compile:
        raise ValueError("compile=True is not supported with data_parallel; pick one")
    step: Callable[..., torch.Tensor] = one_training_step
    if compile:
        step = CompiledStep(one_training_step, model, optimizer, weights[0].device, "fit's step")

    def bound(
        images_batch: torch.Tensor,
        labels_batch: torch.Tensor,
        transform: GradientTransform | None = None,
    ) -> torch.Tensor:
        return step(
            model,
            images_batch,
            labels_batch,
            learning_rate,
            optimizer,
            gradient_transform=then(transform, gradient_transform),
        )

    return bound if data_parallel is None else data_parallel.wrap(bound, weights)


class TrainingLog:
    """fit's output: the notebook's lines through ``print_fn``, and a tqdm bar on stderr.

    The bar shows when stderr is a terminal, or as ``progress`` says (True/False).
    """

    def __init__(
        self, print_fn: Callable[[str], Any] | None, log_every: int, progress: bool | None
    ) -> None:
        self.emit = print_fn if print_fn is not None else (lambda _s: None)
        self.log_every = log_every
        if progress is None:
            progress = bool(getattr(sys.stderr, "isatty", lambda: False)())
        self.progress = progress
        self.bar: Any = None

    def epoch(self, epoch: int) -> None:
        self.emit(f"Epoch {epoch}")
        self.epoch_counter = epoch

    def at_log_point(self, batch: int, num_batches: int) -> bool:
        """Advance the bar; True every ``log_every`` batches and at the epoch's last."""
        if self.progress:
            if self.bar is None:
                from tqdm.auto import tqdm

                desc = f"epoch {self.epoch_counter}"
                self.bar = tqdm(total=num_batches, desc=desc, leave=False, file=sys.stderr)
            self.bar.update(1)
        return batch % self.log_every == 0 or batch == num_batches - 1

    def loss(self, batch: int, loss: torch.Tensor) -> None:
        if batch % self.log_every == 0:
            self.emit(f"loss at batch {batch}: {float(loss):.2f}")

    def end_epoch(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def evaluate(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    batch_size: int | None = None,
) -> float:
    """§2.5.4: accuracy, the fraction of samples whose argmax prediction equals the label.

    ``images`` must have the model's dtype and device (a TypeError / ValueError naming
    both, as in ``fit``); ``labels`` must be 1-D integer class indices, one per image, in
    ``[0, classes)``; a prediction that is NaN or infinite (NaN weights, say) is a
    ValueError, not a number.
    NumPy ``images`` and ``labels`` (the book's) become tensors once, on the model's device.
    """
    images, labels = tensors_from_numpy(model, images, labels)
    weights = _weights_of(model)
    if weights:  # the model's dtype and device, named as fit names them
        images = require_images(images, weights)
    images = require_tensor("images", images)
    labels = require_labels(labels, images, "evaluate")
    step = len(images) if batch_size is None else require_positive_int("batch_size", batch_size)
    correct = torch.zeros((), dtype=torch.int64, device=images.device)
    finite = torch.ones((), dtype=torch.bool, device=images.device)
    highest = int(labels.max())
    with torch.no_grad():
        for start in range(0, len(images), step):
            predictions = model(images[start : start + step])
            if predictions.ndim != 2:
                raise ValueError(
                    "the model's predictions must have shape (batch, classes), got "
                    f"{shape_str(predictions.shape)}"
                )
            if highest >= predictions.shape[1]:
                raise ValueError(
                    f"labels must lie in [0, {predictions.shape[1]}) for a model with "
                    f"{predictions.shape[1]} outputs, got {highest}"
                )
            finite &= torch.isfinite(predictions).all().to(finite.device)
            predicted_labels = predictions.argmax(dim=1)
            correct += (
                predicted_labels == labels[start : start + step].to(predicted_labels.device)
            ).sum()
    if not bool(finite):
        raise ValueError(
            "the model's predictions hold NaN or inf (are its weights finite?); "
            "accuracy is undefined"
        )
    return int(correct) / len(images)


def _weights_of(model: object) -> list[torch.Tensor]:
    """``model.weights``, else its parameters, else nothing (any callable is a model here)."""
    weights = getattr(model, "weights", None)
    if weights is None and isinstance(model, nn.Module):
        weights = list(model.parameters())
    return list(weights) if weights is not None else []
