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

import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from dl_ch2._checks import (
    require_images,
    require_label_range,
    require_labels,
    require_learning_rate,
    require_positive_int,
    require_tensor,
    shape_str,
)
from dl_ch2.batch_generator import BatchGenerator
from dl_ch2.losses import EPSILON, sparse_categorical_crossentropy

if TYPE_CHECKING:
    from dl_ch2.distributed import DataParallel

__all__ = [
    "DivergenceError",
    "History",
    "NonFiniteLossError",
    "evaluate",
    "fit",
    "one_training_step",
    "update_weights",
]

GradientTransform = Callable[[list[torch.Tensor]], Sequence[torch.Tensor]]

#: The most one sample's loss can be: clipping keeps every probability >= 1e-7.
LOSS_CEILING = -math.log(EPSILON)


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite."""

    def __init__(self, epoch: int, batch: int, loss: float, message: str | None = None) -> None:
        super().__init__(
            message
            or (
                f"loss became non-finite ({loss}) at epoch {epoch}, batch {batch}; "
                "lower the learning rate or check the inputs for NaN/inf"
            )
        )
        self.epoch = epoch
        self.batch = batch
        self.loss = loss


class DivergenceError(NonFiniteLossError):
    """Training diverged: the loss sits near its clipping ceiling, far above where it began.

    Clipping bounds the loss at about ``-log(1e-7) = 16.1``, so a learning rate far too
    large never makes it non-finite; ``fit`` raises this instead.
    """

    def __init__(self, epoch: int, batch: int, loss: float, first_loss: float, window: int) -> None:
        super().__init__(
            epoch,
            batch,
            loss,
            f"training diverged at epoch {epoch}, batch {batch}: the mean loss of the last "
            f"{window} batches is {loss:.2f}, near the clipping ceiling {LOSS_CEILING:.1f} and "
            f"far above the first batch's {first_loss:.2f}; lower the learning rate",
        )
        self.first_loss = first_loss


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
    data_parallel: DataParallel | None = None,
) -> History:
    """§2.5.3: the full training loop, ``one_training_step`` on every batch.

    Each epoch prints ``Epoch N`` and, every ``log_every`` batches, ``loss at batch K: L.LL``
    as the notebook does. Batches come from a fresh ``BatchGenerator`` of ``batch_size``
    per epoch (in order unless ``shuffle``). A tqdm bar is shown when stderr is a terminal
    (``progress`` forces it on or off). ``on_epoch_end(epoch, batch_losses)`` runs after
    each epoch.

    Losses stay on the device between log points and are checked there: a non-finite loss
    raises ``NonFiniteLossError`` naming the first bad epoch and batch, and a diverged run
    (the mean loss of the batches since the last check, at least 10, at half the clipping
    ceiling or more and 1.5 times the first batch's loss or more) raises ``DivergenceError``.

    ``compile=True`` runs the same step through ``torch.compile`` (compiling takes seconds;
    if it fails, a one-line warning says so and the fit runs eagerly). Before training, fit
    runs the model once on one image (under ``no_grad``; a forward hook sees that call too)
    to check every label against its width, so a bad label fails before any weight moves.
    ``gradient_transform`` is passed to each step.

    ``data_parallel`` (a ``dl_ch2.distributed.DataParallel``, under torchrun): every rank
    passes the same data, batch size and shuffling seed, and each step is
    ``data_parallel.training_step``, the book's step on the rank's shard of the batch with
    the gradients all-reduced (then ``gradient_transform``, if any); the losses are the
    whole batch's.
    """
    require_positive_int("epochs", epochs)
    require_positive_int("batch_size", batch_size)
    require_positive_int("log_every", log_every)
    weights = trainable_weights(model)
    if optimizer is None:
        learning_rate = require_learning_rate(learning_rate)
    require_images(images, weights)
    require_labels(labels, images)
    emit = print_fn if print_fn is not None else (lambda _s: None)
    if data_parallel is not None and compile:
        raise ValueError("compile=True is not supported with data_parallel; pick one")
    step: Callable[..., torch.Tensor] = one_training_step
    with torch.no_grad():  # the model's width, to check every label once, before any work
        classes = model(images[:1]).shape[-1]
    require_label_range(labels, classes)
    if data_parallel is not None:
        step = data_parallel.training_step
    if compile:
        from dl_ch2._compile import CompiledStep

        step = CompiledStep(one_training_step, model, optimizer, images.device, "fit's step")
    monitor = _LossMonitor()
    history = History()
    show_bar = _progress_enabled(progress)

    for epoch_counter in range(epochs):
        emit(f"Epoch {epoch_counter}")
        batch_generator = BatchGenerator(
            images, labels, batch_size, shuffle=shuffle, generator=generator
        )
        n = batch_generator.num_batches
        losses: list[torch.Tensor] = []  # stay on the device; checked at log points
        bar = _progress_bar(n, epoch_counter) if show_bar else None
        for batch_counter in range(n):
            images_batch, labels_batch = batch_generator.next()
            loss = step(
                model,
                images_batch,
                labels_batch,
                learning_rate,
                optimizer,
                gradient_transform=gradient_transform,
            )
            losses.append(loss)
            if bar is not None:
                bar.update(1)
            if batch_counter % log_every == 0 or batch_counter == n - 1:
                monitor.check(losses, epoch_counter)
                if batch_counter % log_every == 0:
                    emit(f"loss at batch {batch_counter}: {float(loss):.2f}")
        if bar is not None:
            bar.close()
        history.batch_losses.append(torch.stack(losses).double().tolist())
        if on_epoch_end is not None:
            on_epoch_end(epoch_counter, history.batch_losses[-1])
    return history


def check_finite(losses: list[torch.Tensor], start: int, epoch: int) -> None:
    """Raise ``NonFiniteLossError`` at the first NaN/inf in ``losses[start:]`` (one sync)."""
    bad = ~torch.isfinite(torch.stack(losses[start:]))
    if bool(bad.any()):
        first = int(bad.nonzero()[0, 0])
        raise NonFiniteLossError(epoch, start + first, float(losses[start + first]))


class _LossMonitor:
    """fit's checks at its log points: two host syncs each, nothing per step.

    The losses since the previous check must be finite; and their mean (over the last 10
    batches at least) must not sit at half the clipping ceiling or above while being 1.5
    times the run's first loss or more. The first loss stays on the device.
    """

    MIN_WINDOW = 10

    def __init__(self) -> None:
        self.first: torch.Tensor | None = None
        self.checked = 0  # losses of this epoch already checked
        self.epoch = -1

    def check(self, losses: list[torch.Tensor], epoch: int) -> None:
        if epoch != self.epoch:
            self.epoch, self.checked = epoch, 0
        if self.first is None:
            self.first = losses[0]
        check_finite(losses, self.checked, epoch)
        start = max(0, min(self.checked, len(losses) - self.MIN_WINDOW))
        recent = torch.stack(losses[start:]).mean()
        if bool((recent >= LOSS_CEILING / 2) & (recent >= 1.5 * self.first)):
            raise DivergenceError(
                epoch, len(losses) - 1, float(recent), float(self.first), len(losses) - start
            )
        self.checked = len(losses)


def _progress_enabled(progress: bool | None) -> bool:
    if progress is not None:
        return progress
    return bool(getattr(sys.stderr, "isatty", lambda: False)())


def _progress_bar(total: int, epoch: int) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=f"epoch {epoch}", leave=False, file=sys.stderr)


def evaluate(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    batch_size: int | None = None,
) -> float:
    """§2.5.4: accuracy, the fraction of samples whose argmax prediction equals the label.

    ``labels`` must be 1-D integer class indices, one per image, in ``[0, classes)``; a
    prediction that is NaN or infinite (NaN weights, say) is a ValueError, not a number.
    """
    require_tensor("images", images)
    require_labels(labels, images, "evaluate")
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
