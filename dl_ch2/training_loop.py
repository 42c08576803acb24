"""§2.5.2-2.5.4 Running one training step, the full training loop, evaluating the model.

``update_weights`` updates the ``weights`` it is given. (Erratum: the notebook's first
version loops over the global ``model.weights`` instead of its ``weights`` argument.)
``fit`` honours ``batch_size``. (Erratum: the notebook's ``fit`` builds
``BatchGenerator(images, labels)`` and so always uses 128.)
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from dl_ch2._checks import require_positive_int, require_tensor, shape_str
from dl_ch2.batch_generator import BatchGenerator
from dl_ch2.losses import _check as _check_loss_args
from dl_ch2.losses import _clipped_backward, _clipped_forward, sparse_categorical_crossentropy
from dl_ch2.losses import _unchecked as _scce_unchecked

if TYPE_CHECKING:
    from dl_ch2.distributed import DataParallel

__all__ = [
    "History",
    "NonFiniteLossError",
    "evaluate",
    "fit",
    "one_training_step",
    "update_weights",
]


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite."""

    def __init__(self, epoch: int, batch: int, loss: float) -> None:
        super().__init__(
            f"loss became non-finite ({loss}) at epoch {epoch}, batch {batch}; "
            "lower the learning rate or check the inputs for NaN/inf"
        )
        self.epoch = epoch
        self.batch = batch
        self.loss = loss


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
    _apply_update(gradients, weights, learning_rate)


def _apply_update(
    gradients: Sequence[torch.Tensor], weights: Sequence[torch.Tensor], learning_rate: float
) -> None:
    # one multi-tensor kernel instead of a Python loop of small ones
    with torch.no_grad():
        torch._foreach_add_(list(weights), list(gradients), alpha=-learning_rate)


def _loss(
    model: nn.Module, images_batch: torch.Tensor, labels_batch: torch.Tensor, check: bool = True
) -> torch.Tensor:
    predictions = model(images_batch)
    if not check:  # fit() has validated every label once, up front
        return _scce_unchecked(labels_batch, predictions, False).mean()
    per_sample_losses = sparse_categorical_crossentropy(labels_batch, predictions)
    return per_sample_losses.mean()


def one_training_step(
    model: nn.Module,
    images_batch: torch.Tensor,
    labels_batch: torch.Tensor,
    learning_rate: float = 1e-3,
    optimizer: torch.optim.Optimizer | None = None,
    *,
    gradient_transform: Callable[[list[torch.Tensor]], list[torch.Tensor]] | None = None,
) -> torch.Tensor:
    """§2.5.2: forward pass, mean loss, gradients w.r.t. ``model.weights``, update.

    Without ``optimizer`` the update is ``update_weights(gradients, model.weights,
    learning_rate)``; with one, the gradients are put in ``.grad`` and ``optimizer.step()``
    runs (``torch.optim.SGD(lr=1e-3)`` gives the same weights). Returns the batch's mean
    loss as a detached 0-d tensor (no host sync). ``gradient_transform`` maps the gradients
    before the update (data-parallel training all-reduces them there; None = identity).
    """
    return _step(
        model, images_batch, labels_batch, learning_rate, optimizer, True, gradient_transform
    )


def _step(
    model: nn.Module,
    images_batch: torch.Tensor,
    labels_batch: torch.Tensor,
    learning_rate: float,
    optimizer: torch.optim.Optimizer | None,
    check: bool,
    gradient_transform: Callable[[list[torch.Tensor]], list[torch.Tensor]] | None = None,
) -> torch.Tensor:
    weights = _weights_of(model)
    average_loss = _loss(model, images_batch, labels_batch, check)
    gradients: Sequence[torch.Tensor] = torch.autograd.grad(average_loss, weights)
    if gradient_transform is not None:
        gradients = gradient_transform(list(gradients))
    if optimizer is None:
        if check:
            update_weights(gradients, weights, learning_rate)
        else:
            _apply_update(gradients, weights, learning_rate)
    else:
        for w, g in zip(weights, gradients, strict=True):
            w.grad = g
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return average_loss.detach()


def _weights_of(model: nn.Module) -> list[torch.Tensor]:
    weights = getattr(model, "weights", None)
    if weights is None:
        weights = list(model.parameters())
    return list(weights)


@dataclass
class History:
    """What ``fit`` returns: per-batch losses, one list per epoch."""

    batch_losses: list[list[float]] = field(default_factory=list)

    @property
    def epoch_losses(self) -> list[float]:
        """Mean batch loss of each epoch."""
        return [sum(e) / len(e) for e in self.batch_losses]


def _progress_enabled(progress: bool | None) -> bool:
    if progress is not None:
        return progress
    return bool(getattr(sys.stderr, "isatty", lambda: False)())


def fit(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    epochs: int,
    batch_size: int = 128,
    *,
    learning_rate: float = 1e-3,
    optimizer: torch.optim.Optimizer | None = None,
    shuffle: bool = False,
    generator: torch.Generator | None = None,
    log_every: int = 100,
    print_fn: Callable[[str], Any] | None = print,
    progress: bool | None = None,
    on_epoch_end: Callable[[int, list[float]], Any] | None = None,
    fused: bool = True,
    data_parallel: DataParallel | None = None,
) -> History:
    """§2.5.3: the full training loop.

    Each epoch prints ``Epoch N`` and, every ``log_every`` batches, ``loss at batch K: L.LL``
    as the notebook does. Batches come from a fresh ``BatchGenerator`` of ``batch_size``
    per epoch (in order unless ``shuffle``). A tqdm bar is shown when stderr is a terminal
    (``progress`` forces it on or off). Losses stay on the device between log points and are
    checked there, so a non-finite loss raises ``NonFiniteLossError`` naming the first bad
    epoch and batch. ``on_epoch_end(epoch, batch_losses)`` runs after each epoch.

    With ``fused=True`` (the default) and no ``optimizer``, a NaiveSequential of NaiveDense
    layers takes a faster step with the same mathematics: the loss is differentiated down to
    each layer's pre-activation ``z = x @ W + b`` (written out for relu / softmax / identity,
    by autograd for other activations), and the SGD update is folded into the weight-gradient
    product (``W.addmm_(x.T, dz, alpha=-lr)``), so the gradient of W is never materialised.
    It agrees with ``fused=False`` (the book's ``one_training_step``, autograd w.r.t.
    ``model.weights``, per batch) to rounding; any other model or an ``optimizer`` uses the
    book's step.

    With ``data_parallel`` (a ``dl_ch2.distributed.DataParallel``, under torchrun) every
    rank passes the same data, batch size and shuffling seed; each step runs the book's step
    on the rank's shard of the global batch with the gradients all-reduced, and the losses
    are the global batch's.
    """
    require_positive_int("epochs", epochs)
    require_positive_int("batch_size", batch_size)
    require_positive_int("log_every", log_every)
    require_tensor("images", images)
    require_tensor("labels", labels)
    if len(images) != len(labels):
        raise ValueError(
            f"images {shape_str(images.shape)} and labels {shape_str(labels.shape)} must have "
            "the same number of samples"
        )
    emit = print_fn if print_fn is not None else (lambda _s: None)
    # validate the labels once against the model's output width, so steps can skip it
    with torch.no_grad():
        probe = model(images[:1])
    _check_loss_args(labels, probe.new_empty((len(labels), probe.shape[-1])), "probabilities")
    history = History()
    show_bar = _progress_enabled(progress)
    layers = (
        _fusable_layers(model, images)
        if fused and optimizer is None and data_parallel is None
        else None
    )
    manual = layers is not None and all(_has_manual_backward(layer) for layer in layers)

    for epoch_counter in range(epochs):
        emit(f"Epoch {epoch_counter}")
        batch_generator = BatchGenerator(
            images, labels, batch_size, shuffle=shuffle, generator=generator
        )
        n = batch_generator.num_batches
        step_losses: list[torch.Tensor] = []  # stay on the device; stacked at log points
        checked = 0
        bar = None
        if show_bar:
            from tqdm.auto import tqdm

            bar = tqdm(total=n, desc=f"epoch {epoch_counter}", leave=False, file=sys.stderr)
        for batch_counter in range(n):
            images_batch, labels_batch = batch_generator.next()
            if data_parallel is not None:
                loss = data_parallel.training_step(
                    model, images_batch, labels_batch, learning_rate, optimizer
                )
            elif layers is not None and manual:
                loss = _manual_step(layers, images_batch, labels_batch, learning_rate)
            elif layers is not None:
                loss = _fused_step(layers, images_batch, labels_batch, learning_rate)
            else:
                loss = _step(model, images_batch, labels_batch, learning_rate, optimizer, False)
            step_losses.append(loss)
            if bar is not None:
                bar.update(1)
            if batch_counter % log_every == 0 or batch_counter == n - 1:
                window = torch.stack(step_losses[checked:])
                _check_finite(window, checked, epoch_counter)
                checked = batch_counter + 1
                if batch_counter % log_every == 0:
                    emit(f"loss at batch {batch_counter}: {float(loss):.2f}")
        if bar is not None:
            bar.close()
        history.batch_losses.append(torch.stack(step_losses).double().tolist())
        if on_epoch_end is not None:
            on_epoch_end(epoch_counter, history.batch_losses[-1])
    return history


def _fusable_layers(model: nn.Module, images: torch.Tensor) -> list[Any] | None:
    from dl_ch2.naive_model import NaiveDense, NaiveSequential

    # only the classes' own forward passes are known; a subclass overriding one is not fused
    if (
        images.ndim != 2
        or not isinstance(model, NaiveSequential)
        or type(model).forward is not NaiveSequential.forward
    ):
        return None
    layers = list(model.layers)
    if not layers or not all(
        isinstance(layer, NaiveDense) and type(layer).forward is NaiveDense.forward
        for layer in layers
    ):
        return None
    return layers


def _has_manual_backward(layer: Any) -> bool:
    from dl_ch2.naive_model import identity, relu, softmax

    return layer.activation in (relu, softmax, identity)


def _fused_step(
    layers: Sequence[Any], images_batch: torch.Tensor, labels_batch: torch.Tensor, lr: float
) -> torch.Tensor:
    inputs: list[torch.Tensor] = []
    zs: list[torch.Tensor] = []
    x = images_batch
    for layer in layers:
        # weights enter as constants: autograd tracks the path from each z to the loss only
        z = torch.addmm(layer.b.detach(), x, layer.W.detach()).requires_grad_(True)
        inputs.append(x)
        zs.append(z)
        x = layer.activation(z)
    loss = _scce_unchecked(labels_batch, x, False).mean()
    dzs = torch.autograd.grad(loss, zs)
    with torch.no_grad():
        for layer, x_in, dz in zip(layers, inputs, dzs, strict=True):
            layer.W.addmm_(x_in.detach().T, dz, alpha=-lr)  # W -= lr * x.T @ dz, in one GEMM
            layer.b.add_(dz.sum(dim=0), alpha=-lr)
    return loss.detach()


def _manual_step(
    layers: Sequence[Any], images_batch: torch.Tensor, labels_batch: torch.Tensor, lr: float
) -> torch.Tensor:
    """The fused step with the backward written out (relu / softmax / identity layers only).

    Same mathematics as autograd's (tested equal to rounding), without its graph: forward,
    d loss / d probabilities (zero where clipping acted), then layer by layer
    dz = activation'(z) * da, da_prev = dz @ W.T (before W moves), W -= lr * x.T @ dz.
    """
    from dl_ch2.naive_model import relu, softmax

    with torch.no_grad():
        cache: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        a = images_batch
        for layer in layers:
            z = torch.addmm(layer.b, a, layer.W)
            out = layer.activation(z)
            cache.append((a, z, out))
            a = out
        labels = labels_batch.long()
        per_sample, c_y, total = _clipped_forward(a, labels)
        loss: torch.Tensor = per_sample.mean()
        da = _clipped_backward(a, labels, c_y, total, 1.0 / len(labels))
        for k in range(len(layers) - 1, -1, -1):
            layer = layers[k]
            x_in, z, out = cache[k]
            if layer.activation is relu:
                dz = torch.ops.aten.threshold_backward(da, z, 0)  # da * (z > 0), one kernel
            elif layer.activation is softmax:
                dz = out * (da - (da * out).sum(dim=1, keepdim=True))
            else:
                dz = da
            if k > 0:
                da = dz @ layer.W.T
            layer.W.addmm_(x_in.T, dz, alpha=-lr)
            layer.b.add_(dz.sum(dim=0), alpha=-lr)
    return loss


def _check_finite(window: torch.Tensor, start: int, epoch: int) -> None:
    bad = ~torch.isfinite(window)
    if bool(bad.any()):
        first = int(bad.nonzero()[0, 0])
        raise NonFiniteLossError(epoch, start + first, float(window[first]))


def evaluate(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    batch_size: int | None = None,
) -> float:
    """§2.5.4: accuracy, the fraction of samples whose argmax prediction equals the label."""
    require_tensor("images", images)
    require_tensor("labels", labels)
    if len(images) != len(labels):
        raise ValueError(
            f"images {shape_str(images.shape)} and labels {shape_str(labels.shape)} must have "
            "the same number of samples"
        )
    if len(images) == 0:
        raise ValueError("cannot evaluate on zero samples")
    step = len(images) if batch_size is None else require_positive_int("batch_size", batch_size)
    correct = torch.zeros((), dtype=torch.int64, device=images.device)
    with torch.no_grad():
        for start in range(0, len(images), step):
            predictions = model(images[start : start + step])
            predicted_labels = predictions.argmax(dim=1)
            correct += (
                predicted_labels == labels[start : start + step].to(predicted_labels.device)
            ).sum()
    return int(correct) / len(images)
