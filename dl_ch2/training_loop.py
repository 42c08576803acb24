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
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from dl_ch2._batches import Batches, check_pass
from dl_ch2._checks import (
    require_images,
    require_labels,
    require_learning_rate,
    require_positive_int,
    require_tensor,
    shape_str,
)
from dl_ch2._compile import CompiledStep, FunctionalStep, HookLook, look_at_hooks
from dl_ch2._numpy_io import tensors_from_numpy
from dl_ch2._steps import BatchStep, GradientTransform, StepWrapper, modes, then
from dl_ch2.loss_monitor import DivergenceError, LossMonitor, NonFiniteLossError
from dl_ch2.losses import LossFn, book_loss, resolve_loss_fn

__all__ = [
    "DivergenceError",  # from dl_ch2.loss_monitor, where fit's checks live
    "History",
    "NonFiniteLossError",
    "TrainingLog",
    "book_step",
    "evaluate",
    "fit",
    "model_weights",
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
    learning_rate: float | torch.optim.Optimizer | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    *,
    loss_fn: LossFn | str | None = None,
    gradient_transform: GradientTransform | None = None,
) -> torch.Tensor:
    """§2.5.2: forward pass, mean loss, gradients w.r.t. ``model.weights``, update.

    The weights are :func:`trainable_weights`. The loss is ``loss_fn(predictions,
    labels)`` (PyTorch's order; per-sample losses or their mean): by default the book's
    ``sparse_categorical_crossentropy`` on probabilities; ``"from_logits"`` for logits.
    Without ``optimizer`` the update is ``update_weights(gradients, weights,
    learning_rate)`` (``learning_rate`` 1e-3 by default); with one (also accepted in
    ``learning_rate``'s place), the gradients are put in ``.grad`` and ``optimizer.step()``
    runs (``torch.optim.SGD(lr=1e-3)`` gives the same weights); a ``learning_rate`` other
    than the optimizer's own is a ValueError. ``gradient_transform``, if given, maps the
    list of gradients before the update (an all-reduce in data-parallel training, say).
    Afterwards each weight's ``.grad`` holds the gradient it was updated with, as after
    ``loss.backward(); optimizer.step()`` (not in a compiled step: its gradients may live
    in CUDA graphs' memory), and autocast's cached low-precision copies are dropped so the
    next forward pass sees the new weights. Returns the batch's mean loss, before the
    update, as a detached 0-d tensor (no host sync).
    """
    if isinstance(learning_rate, torch.optim.Optimizer):
        if optimizer is not None:
            raise ValueError("pass the optimizer once: as learning_rate or as optimizer")
        optimizer, learning_rate = learning_rate, None
    weights = trainable_weights(model)
    rate = _step_rate(learning_rate, optimizer)
    require_images(images_batch, weights, "images_batch")
    predictions = model(images_batch)
    per_sample_losses = resolve_loss_fn(loss_fn)(predictions, labels_batch)
    average_loss = per_sample_losses.mean()
    gradients = list(torch.autograd.grad(average_loss, weights))
    if gradient_transform is not None:
        gradients = list(gradient_transform(gradients))
    if optimizer is None:
        update_weights(gradients, weights, rate)
    else:
        optimizer.zero_grad(set_to_none=True)  # as a plain loop does: no stale .grad steps
        for w, g in zip(weights, gradients, strict=True):
            w.grad = g
        optimizer.step()
    _after_update(weights, gradients, optimizer)
    return average_loss.detach()


def _step_rate(learning_rate: object, optimizer: torch.optim.Optimizer | None) -> float:
    """The manual update's rate (1e-3 by default); with an optimizer, a rate that it would
    ignore is a ValueError."""
    if optimizer is None:
        return require_learning_rate(1e-3 if learning_rate is None else learning_rate)
    if learning_rate is not None:
        rates = sorted({float(group["lr"]) for group in optimizer.param_groups})
        if rates != [float(require_learning_rate(learning_rate))]:
            raise ValueError(
                f"learning_rate={learning_rate!r} but the optimizer's lr "
                f"{', '.join(f'{r:g}' for r in rates)} is what it uses: pass learning_rate "
                "or optimizer, not both"
            )
    return 1e-3  # unused: the optimizer steps


def _after_update(
    weights: Sequence[torch.Tensor],
    gradients: Sequence[torch.Tensor],
    optimizer: torch.optim.Optimizer | None,
) -> None:
    """``.grad`` as PyTorch leaves it after a step, and autocast's weight casts dropped."""
    if torch.compiler.is_compiling():  # the compiled step leaves no gradient behind
        if optimizer is not None:
            optimizer.zero_grad(set_to_none=True)
        return
    for w, g in zip(weights, gradients, strict=True):
        w.grad = g
    # Under torch.autocast the bf16/fp16 copy of each weight is cached until the autocast
    # block ends; the in-place update does not refresh it, so drop it.
    torch.clear_autocast_cache()


def trainable_weights(model: nn.Module) -> list[torch.Tensor]:
    """What a step trains: :func:`model_weights` without the frozen ones.

    A parameter with ``requires_grad=False`` is skipped, as ``torch.optim`` skips it; a
    model with nothing left to train is a ValueError.
    """
    weights = model_weights(model)
    trainable = [w for w in weights if w.requires_grad]
    if not trainable:
        why = "every weight has requires_grad=False" if weights else "it has no parameters"
        raise ValueError(
            f"model ({type(model).__name__}) has no weights to train: {why} (a book-style "
            "model registers its weights as nn.Parameter; unfreeze with requires_grad_())"
        )
    return trainable


def model_weights(model: object) -> list[torch.Tensor]:
    """``model.weights`` when it is the book's list (a list or tuple of the model's own
    parameters), else ``model.parameters()``: an attribute of one's own that happens to be
    called ``weights`` (a tensor of class weights, say) is not mistaken for it."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    params: list[torch.Tensor] = list(model.parameters())
    weights = getattr(model, "weights", None)
    if isinstance(weights, list | tuple) and weights:
        ids = {id(p) for p in params}
        if all(id(w) in ids for w in weights):
            return list(weights)
    return params


@dataclass(repr=False)
class History:
    """What ``fit`` returns: per-batch losses, one list per epoch."""

    batch_losses: list[list[float]] = field(default_factory=list)

    @property
    def epoch_losses(self) -> list[float]:
        """Mean batch loss of each epoch."""
        return [sum(e) / len(e) for e in self.batch_losses]

    def __repr__(self) -> str:
        sizes = sorted({len(e) for e in self.batch_losses})
        losses = [f"{v:.4f}" for v in self.epoch_losses]
        if len(losses) > 4:
            losses = [*losses[:2], "...", *losses[-2:]]
        return (
            f"History(epochs={len(self.batch_losses)}, batches_per_epoch="
            f"{'/'.join(map(str, sizes))}, epoch_losses=[{', '.join(losses)}])"
        )


def fit(
    model: nn.Module,
    images: torch.Tensor | Iterable[tuple[torch.Tensor, torch.Tensor]],
    labels: torch.Tensor | None = None,
    epochs: int | None = None,
    batch_size: int | None = None,
    *,
    learning_rate: float | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    loss_fn: LossFn | str | None = None,
    compile: bool = False,
    shuffle: bool = False,
    generator: torch.Generator | None = None,
    log_every: int = 100,
    print_fn: Callable[[str], Any] | None = print,
    progress: bool | None = None,
    on_epoch_end: Callable[[int, list[float]], Any] | None = None,
    on_batch_end: Callable[[int, int, torch.Tensor], Any] | None = None,
    gradient_transform: GradientTransform | None = None,
    data_parallel: StepWrapper | None = None,
) -> History:
    """§2.5.3: the full training loop, ``one_training_step`` on every batch.

    Batches come from ``images`` and ``labels`` tensors (``batch_size`` 128 unless given)
    or from ``images`` alone as an iterable of ``(images, labels)`` batches (a DataLoader):
    see :class:`~dl_ch2._batches.Batches`. ``loss_fn``, ``learning_rate`` and ``optimizer``
    are :func:`book_step`'s. Everything is checked, with one look at the model in eval mode
    (:func:`~dl_ch2._batches.check_pass`), before any weight moves; the loop runs in train
    mode and gives the caller's modes back. ``TrainingLog`` prints; ``LossMonitor`` raises on
    a non-finite or diverged loss. ``on_batch_end(epoch, batch, loss)`` runs after each step
    (a per-batch scheduler), ``on_epoch_end(epoch, batch_losses)`` after each epoch.
    NumPy ``images`` and ``labels`` (the book's) become tensors once, on the model's device.
    """
    images, labels = tensors_from_numpy(model, images, labels)
    weights = trainable_weights(model)
    epochs, loss_fn = require_positive_int("epochs", epochs), resolve_loss_fn(loss_fn)
    batches = Batches(images, labels, epochs, batch_size, shuffle, generator, weights)
    check_pass(model, batches, probabilities=loss_fn is book_loss)
    log, monitor = TrainingLog(print_fn, log_every, progress), LossMonitor(weights)
    step = book_step(
        model, learning_rate, optimizer, gradient_transform, compile, data_parallel, loss_fn=loss_fn
    )
    history = History()
    with modes(model, training=True):
        for epoch_counter in range(epochs):
            log.epoch(epoch_counter)
            losses: list[torch.Tensor] = []  # stay on the device; checked at log points
            for batch_counter, images_batch, labels_batch, last in batches.epoch():
                losses.append(step(images_batch, labels_batch))
                if on_batch_end is not None:
                    on_batch_end(epoch_counter, batch_counter, losses[-1])
                if log.at_log_point(batch_counter, last, batches.num_batches):
                    monitor.check(losses, epoch_counter)
                    log.loss(batch_counter, losses[-1])
            log.end_epoch()
            history.batch_losses.append(torch.stack(losses).double().tolist())
            if on_epoch_end is not None:
                on_epoch_end(epoch_counter, history.batch_losses[-1])
    return history


def book_step(
    model: nn.Module,
    learning_rate: float | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    gradient_transform: GradientTransform | None = None,
    compile: bool = False,
    data_parallel: StepWrapper | None = None,
    *,
    loss_fn: LossFn | str | None = None,
) -> BatchStep:
    """``one_training_step`` bound to its model, optimizer and loss: ``loss = step(x, y)``.

    ``learning_rate`` (1e-3 by default) is for the book's update: with an ``optimizer``,
    which has its own, it is a ValueError. ``compile`` runs the step through
    ``CompiledStep`` (``torch.compile``, eager if compiling fails; one graph of the whole
    step, ``FunctionalStep``, for the book's update on a model without hooks);
    ``data_parallel.wrap`` makes it the step on this rank's shard with the gradients
    all-reduced before ``gradient_transform``. The two do not combine.
    """
    weights = trainable_weights(model)
    if optimizer is not None and learning_rate is not None:
        raise ValueError(
            "pass learning_rate or optimizer, not both: the optimizer has its own lr "
            "(torch.optim.SGD(model.parameters(), lr=...))"
        )
    rate = None if optimizer is not None else _step_rate(learning_rate, None)
    if data_parallel is not None and compile:
        raise ValueError("compile=True is not supported with data_parallel; pick one")
    loss = resolve_loss_fn(loss_fn)
    step: Callable[..., torch.Tensor] = one_training_step
    look = look_at_hooks(model) if compile else None
    if look is not None and optimizer is None and gradient_transform is None and not look.found:
        return _one_graph_step(model, weights, _step_rate(learning_rate, None), loss, look)
    if look is not None:
        device = weights[0].device
        step = CompiledStep(one_training_step, model, optimizer, device, "fit's step", look)

    def bound(
        images_batch: torch.Tensor,
        labels_batch: torch.Tensor,
        transform: GradientTransform | None = None,
    ) -> torch.Tensor:
        return step(
            model,
            images_batch,
            labels_batch,
            rate,
            optimizer,
            loss_fn=loss,
            gradient_transform=then(transform, gradient_transform),
        )

    return bound if data_parallel is None else data_parallel.wrap(bound, weights)


def _one_graph_step(
    model: nn.Module, weights: Sequence[torch.Tensor], rate: float, loss: LossFn, look: HookLook
) -> BatchStep:
    """The compiled book step as one graph: forward, backward and the book's update, for a
    model without hooks (``FunctionalStep``); the chapter's step, eagerly, if it fails to
    compile (``torch.func`` refuses a module's backward hooks, say)."""

    def chapter_step(images_batch: torch.Tensor, labels_batch: torch.Tensor) -> torch.Tensor:
        return one_training_step(model, images_batch, labels_batch, rate, loss_fn=loss)

    whole = FunctionalStep(model, weights, rate, loss)
    device = weights[0].device
    one_graph = CompiledStep(whole, model, None, device, "fit's step", look, chapter_step)

    def whole_step(
        images_batch: torch.Tensor,
        labels_batch: torch.Tensor,
        transform: GradientTransform | None = None,
    ) -> torch.Tensor:
        require_images(images_batch, weights, "images_batch")  # as the eager step checks
        return one_graph(images_batch, labels_batch)  # transform: only data-parallel's

    return whole_step


class TrainingLog:
    """fit's output: the notebook's lines through ``print_fn``, and a tqdm bar on stderr.

    The bar shows when stderr is a terminal, or as ``progress`` says (True/False).
    """

    def __init__(
        self, print_fn: Callable[[str], Any] | None, log_every: int, progress: bool | None
    ) -> None:
        self.emit = print_fn if print_fn is not None else (lambda _s: None)
        self.log_every = require_positive_int("log_every", log_every)
        if progress is None:
            progress = bool(getattr(sys.stderr, "isatty", lambda: False)())
        self.progress = progress
        self.bar: Any = None

    def epoch(self, epoch: int) -> None:
        self.emit(f"Epoch {epoch}")
        self.epoch_counter = epoch

    def at_log_point(self, batch: int, last: bool, num_batches: int | None) -> bool:
        """Advance the bar; True every ``log_every`` batches and at the epoch's last."""
        if self.progress:
            if self.bar is None:
                from tqdm.auto import tqdm

                desc = f"epoch {self.epoch_counter}"
                self.bar = tqdm(total=num_batches, desc=desc, leave=False, file=sys.stderr)
            self.bar.update(1)
        return batch % self.log_every == 0 or last

    def loss(self, batch: int, loss: torch.Tensor) -> None:
        if batch % self.log_every == 0:
            line = f"loss at batch {batch}: {float(loss):.2f}"
            if self.bar is None:
                self.emit(line)
            else:  # the bar steps aside for the line and is drawn again below it
                with self.bar.external_write_mode():
                    self.emit(line)

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

    The model runs in eval mode (its modes are given back after) under
    ``torch.inference_mode()``, as a PyTorch evaluation loop runs it: Dropout off,
    BatchNorm on its running statistics. ``images`` must have the model's dtype and device
    (a TypeError / ValueError naming both, as in ``fit``); ``labels`` must be 1-D integer
    class indices, one per image, in ``[0, classes)``; a prediction that is NaN or
    infinite (NaN weights, say) is a ValueError, not a number.
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
    with modes(model, training=False), torch.inference_mode():
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
    """An ``nn.Module``'s :func:`model_weights`; else a list ``model.weights``, else nothing
    (any callable is a model to ``evaluate``)."""
    if isinstance(model, nn.Module):
        return model_weights(model)
    weights = getattr(model, "weights", None)
    return list(weights) if isinstance(weights, list | tuple) else []
