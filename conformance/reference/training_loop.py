"""§2.5.2-2.5.4 one_training_step, update_weights, fit, evaluate, with hand-derived gradients."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np

from conformance.reference._checks import (
    require_labels,
    require_learning_rate,
    require_positive_int,
    shape_str,
)
from conformance.reference.batch_generator import BatchGenerator
from conformance.reference.losses import (
    EPSILON,
    sparse_categorical_crossentropy,
    sparse_categorical_crossentropy_backward,
)
from conformance.reference.naive_model import NaiveSequential

__all__ = [
    "LOSS_CEILING",
    "DivergenceError",
    "NonFiniteLossError",
    "evaluate",
    "fit",
    "loss_and_gradients",
    "one_training_step",
    "update_weights",
]


class Optimizer(Protocol):
    def apply_gradients(
        self, gradients: Sequence[np.ndarray], weights: Sequence[np.ndarray]
    ) -> None: ...


class NonFiniteLossError(FloatingPointError):
    def __init__(self, epoch: int, batch: int, loss: float) -> None:
        super().__init__(
            f"loss became non-finite ({loss}) at epoch {epoch}, batch {batch}; "
            "lower the learning rate or check the inputs for NaN/inf"
        )
        self.epoch, self.batch, self.loss = epoch, batch, loss


#: The largest per-sample loss the clipped crossentropy can give: -log(1e-7), about 16.1.
LOSS_CEILING = -float(np.log(EPSILON))


class DivergenceError(NonFiniteLossError):
    """The recent mean loss sits at half the ceiling or above and at 1.5 times the first."""

    def __init__(self, epoch: int, batch: int, loss: float, first: float, window: int) -> None:
        FloatingPointError.__init__(
            self,
            f"training diverged at epoch {epoch}, batch {batch}: the mean loss over the last "
            f"{window} batches is {loss:.2f}, near the clipping ceiling {LOSS_CEILING:.1f} and "
            f"far above the first loss {first:.2f}; lower the learning rate",
        )
        self.epoch, self.batch, self.loss, self.first = epoch, batch, loss, first


def loss_and_gradients(
    model: NaiveSequential,
    images: np.ndarray,
    labels: np.ndarray,
    *,
    from_logits: bool = False,
) -> tuple[float, list[np.ndarray]]:
    """Mean batch loss and its gradient w.r.t. every weight, in ``model.weights`` order.

    Backpropagation by hand through NaiveDense layers with relu / softmax / identity
    activations (anything else is a ValueError). ``from_logits`` treats the last layer's
    output as logits (give it the identity activation).
    """
    if not isinstance(model, NaiveSequential):
        raise TypeError(f"model must be a reference NaiveSequential, got {type(model).__name__}")
    inputs, caches = images, []
    for layer in model.layers:
        z, a = layer.forward(inputs)
        caches.append((inputs, z, a))
        inputs = a
    loss = float(sparse_categorical_crossentropy(labels, inputs, from_logits=from_logits).mean())
    da = sparse_categorical_crossentropy_backward(labels, inputs, from_logits=from_logits)
    grads: list[np.ndarray] = []
    for k in range(len(model.layers) - 1, -1, -1):
        x, z, a = caches[k]
        dW, db, da_prev = model.layers[k].backward(x, z, a, da, need_input_grad=k > 0)
        grads[:0] = [dW, db]
        if da_prev is not None:
            da = da_prev
    return loss, grads


def update_weights(
    gradients: Sequence[np.ndarray],
    weights: Sequence[np.ndarray],
    learning_rate: float = 1e-3,
) -> None:
    """§2.5.2: ``w -= learning_rate * g`` in place, for the ``weights`` given only."""
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
    for g, w in zip(gradients, weights, strict=True):
        w -= learning_rate * g


def one_training_step(
    model: NaiveSequential,
    images_batch: np.ndarray,
    labels_batch: np.ndarray,
    learning_rate: float = 1e-3,
    optimizer: Optimizer | None = None,
) -> float:
    """§2.5.2: forward, mean loss, gradients, update; returns the loss (before the update)."""
    if optimizer is None:
        learning_rate = require_learning_rate(learning_rate)
    loss, gradients = loss_and_gradients(model, images_batch, labels_batch)
    if optimizer is None:
        update_weights(gradients, model.weights, learning_rate)
    else:
        optimizer.apply_gradients(gradients, model.weights)
    return loss


def fit(
    model: NaiveSequential,
    images: np.ndarray,
    labels: np.ndarray,
    epochs: int,
    batch_size: int = 128,
    *,
    learning_rate: float = 1e-3,
    optimizer: Optimizer | None = None,
    shuffle: bool = False,
    rng: np.random.Generator | None = None,
    log_every: int = 100,
    print_fn: Callable[[str], Any] | None = print,
    on_epoch_end: Callable[[int, list[float]], Any] | None = None,
) -> list[list[float]]:
    """§2.5.3: the training loop; returns per-batch losses, one list per epoch.

    Every argument is checked before any weight moves (the labels against the model's
    width too). A non-finite loss raises NonFiniteLossError at its batch. At the log points
    (every ``log_every`` batches and each epoch's last batch) the mean of the losses since
    the previous check, and of the epoch's last 10 at least, must not reach both half of
    LOSS_CEILING and 1.5 times the run's first loss: that is a DivergenceError.
    """
    learning_rate = _check_fit_arguments(
        model, images, labels, epochs, batch_size, log_every, learning_rate, optimizer
    )
    emit = print_fn if print_fn is not None else (lambda _s: None)
    history: list[list[float]] = []
    first: float | None = None
    for epoch_counter in range(epochs):
        emit(f"Epoch {epoch_counter}")
        batch_generator = BatchGenerator(images, labels, batch_size, shuffle=shuffle, rng=rng)
        losses: list[float] = []
        checked = 0
        for batch_counter in range(batch_generator.num_batches):
            images_batch, labels_batch = batch_generator.next()
            loss = one_training_step(
                model, images_batch, labels_batch, learning_rate, optimizer=optimizer
            )
            if not np.isfinite(loss):
                raise NonFiniteLossError(epoch_counter, batch_counter, loss)
            losses.append(loss)
            first = loss if first is None else first
            if batch_counter % log_every == 0:
                emit(f"loss at batch {batch_counter}: {loss:.2f}")
            if batch_counter % log_every == 0 or batch_counter == batch_generator.num_batches - 1:
                _check_divergence(losses, checked, first, epoch_counter, batch_counter)
                checked = len(losses)
        history.append(losses)
        if on_epoch_end is not None:
            on_epoch_end(epoch_counter, losses)
    return history


def _check_fit_arguments(
    model: NaiveSequential,
    images: np.ndarray,
    labels: np.ndarray,
    epochs: int,
    batch_size: int,
    log_every: int,
    learning_rate: float,
    optimizer: Optimizer | None,
) -> float:
    """``fit``'s arguments, every one checked before any weight moves; the learning rate."""
    require_positive_int("epochs", epochs)
    require_positive_int("batch_size", batch_size)
    require_positive_int("log_every", log_every)
    if optimizer is None:
        learning_rate = require_learning_rate(learning_rate)
    if len(images) != len(labels):
        raise ValueError(
            f"images {shape_str(np.shape(images))} and labels {shape_str(np.shape(labels))} "
            "must have the same number of samples"
        )
    require_labels(labels, len(images), np.shape(model(images[:1]))[-1])
    return learning_rate


def _check_divergence(
    losses: list[float], checked: int, first: float, epoch: int, batch: int
) -> None:
    """At a log point: the mean loss since the last check (the last 10 at least) must not
    reach both half of LOSS_CEILING and 1.5 times the run's first loss."""
    start = max(0, min(checked, len(losses) - 10))
    recent = float(np.mean(losses[start:]))
    if recent >= LOSS_CEILING / 2 and recent >= 1.5 * first:
        raise DivergenceError(epoch, batch, recent, first, len(losses) - start)


def evaluate(
    model: Callable[[np.ndarray], np.ndarray],
    images: np.ndarray,
    labels: np.ndarray,
    batch_size: int | None = None,
) -> float:
    """§2.5.4: the fraction of argmax predictions equal to the labels.

    The labels must be integer class indices below the model's width, one per image; a NaN
    or infinite prediction is a ValueError: the accuracy is undefined.
    """
    if len(images) != len(labels):
        raise ValueError(
            f"images {shape_str(np.shape(images))} and labels {shape_str(np.shape(labels))} "
            "must have the same number of samples"
        )
    if len(images) == 0:
        raise ValueError("cannot evaluate on zero samples")
    step = len(images) if batch_size is None else require_positive_int("batch_size", batch_size)
    correct = 0
    for start in range(0, len(images), step):
        predictions = model(images[start : start + step])
        if start == 0:  # the model's width is known from its first predictions
            require_labels(labels, len(images), predictions.shape[1])
        if not np.isfinite(predictions).all():
            raise ValueError(
                "the model's predictions hold NaN or inf (are its weights finite?); "
                "accuracy is undefined"
            )
        correct += int((predictions.argmax(axis=1) == labels[start : start + step]).sum())
    return correct / len(images)
