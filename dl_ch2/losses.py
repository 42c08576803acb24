"""§2.5.2 The loss: ``sparse_categorical_crossentropy`` as the notebook's eager loop ran it.

In TensorFlow 2.6, ``tf.keras.losses.sparse_categorical_crossentropy(labels, probs)`` on an
eager tensor cannot see the softmax that produced ``probs``, so it

1. clips the probabilities to [1e-7, 1 - 1e-7] (Keras' ``epsilon()``),
2. takes their log, and
3. applies softmax cross-entropy *to those logs*.

Step 3 renormalises: the per-sample loss is ``-log(p_y) + log(sum_j p_j)`` with the clipped
``p``, which differs from ``-log(p_y)`` once clipping has changed a row's sum. The gradient
w.r.t. a probability that clipping moved is zero (TF's and torch's clip gradients agree).

How this differs from the other places the chapter's loss runs:

- Keras ``model.fit`` with a softmax output layer (graph mode) finds the softmax's logits
  and calls the cross-entropy on them: no clipping at all. ``from_logits=True`` here
  gives that loss.
- Keras 3's torch and jax backends normalise the probabilities to sum to 1, clip them to
  [epsilon, 1 - epsilon], then take ``-log p_y``: close, but not equal once clipping acts.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from dl_ch2._checks import require_tensor, shape_str

__all__ = [
    "EPSILON",
    "LossFn",
    "book_loss",
    "logits_loss",
    "resolve_loss_fn",
    "sparse_categorical_crossentropy",
]

#: A training loss in PyTorch's argument order, ``loss_fn(predictions, labels)``: per-sample
#: losses or their mean (``torch.nn.functional.cross_entropy``, ``nn.CrossEntropyLoss()``).
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

#: Keras' ``backend.epsilon()``.
EPSILON = 1e-7


def _check(labels: torch.Tensor, predictions: torch.Tensor, what: str) -> None:
    require_tensor("labels", labels)
    require_tensor(what, predictions)
    if predictions.ndim != 2:
        raise ValueError(
            f"{what} must have shape (batch, classes), got {shape_str(predictions.shape)}"
        )
    if not predictions.dtype.is_floating_point:
        raise TypeError(f"{what} must be floating point, got {predictions.dtype}")
    if labels.dtype.is_floating_point or labels.dtype.is_complex or labels.dtype == torch.bool:
        raise TypeError(f"labels must be integer class indices, got {labels.dtype}")
    if labels.shape != predictions.shape[:1]:
        raise ValueError(
            f"labels must have shape (batch,) = {shape_str(predictions.shape[:1])} to match "
            f"{what} {shape_str(predictions.shape)}, got {shape_str(labels.shape)}"
        )
    if labels.numel() and labels.device.type == "cpu" and not torch.compiler.is_compiling():
        # One host check on CPU; on CUDA the kernel's own device-side assert catches it.
        # A compiled fit checks every label once, up front, instead.
        try:
            lo, hi = int(labels.min()), int(labels.max())
        except RuntimeError as exc:  # under torch.func.vmap a batched tensor has no .item():
            if "vmap" not in str(exc):  # the check is left to gather's own index check
                raise
            return
        if lo < 0 or hi >= predictions.shape[1]:
            raise ValueError(
                f"labels must lie in [0, {predictions.shape[1]}) for {predictions.shape[1]} "
                f"classes, got values in [{lo}, {hi}]"
            )


def sparse_categorical_crossentropy(
    labels: torch.Tensor,
    predictions: torch.Tensor,
    *,
    from_logits: bool = False,
) -> torch.Tensor:
    """§2.5.2: per-sample loss, shape (batch,), for integer ``labels`` and ``predictions``.

    ``predictions`` are probabilities (``from_logits=False``, TF 2.6 eager semantics:
    clip, log, softmax cross-entropy on the logs) or logits (``from_logits=True``:
    plain softmax cross-entropy, what Keras ``fit`` computes). The mean over the batch is
    the training loss.
    """
    what = "logits" if from_logits else "probabilities"
    _check(labels, predictions, what)
    return _unchecked(labels, predictions, from_logits)


def _unchecked(labels: torch.Tensor, predictions: torch.Tensor, from_logits: bool) -> torch.Tensor:
    labels = labels.long()
    if from_logits:
        return F.cross_entropy(predictions, labels, reduction="none")
    if predictions.requires_grad:
        out: torch.Tensor = _ClippedCrossEntropy.apply(predictions, labels)[0]  # type: ignore[no-untyped-call]
        return out
    return _clipped_forward(predictions, labels)[0]


def _clipped_forward(
    p: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Loss ``log(sum c) - log(c_y)`` with ``c = clip(p)``; also returns c and sum c."""
    c = p.clamp(EPSILON, 1.0 - EPSILON)
    total = c.sum(dim=1)
    c_y = c.gather(1, labels[:, None])[:, 0]
    return torch.log(total) - torch.log(c_y), c_y, total


class _ClippedCrossEntropy(torch.autograd.Function):
    """clip -> log -> softmax cross-entropy as one autograd node.

    The same function and gradient as composing ``clamp``, ``log`` and ``cross_entropy``
    (d loss / d p_j = 1 / sum c - [j == y] / c_y inside the clip bounds, 0 outside; the
    bounds pass gradient, as torch's and TF's clip do), in a third of the kernels.
    ``setup_context`` and a generated vmap rule let ``torch.func`` (``grad``, ``vmap``,
    ``functional_call``) transform it.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(p: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return _clipped_forward(p, labels)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[Any, ...]) -> None:
        p, labels = inputs
        _, c_y, total = output
        ctx.mark_non_differentiable(c_y, total)
        ctx.set_materialize_grads(False)  # no zeros for the two helper outputs' gradients
        ctx.save_for_backward(p, labels, c_y, total)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad_out: torch.Tensor, *_unused: Any) -> tuple[torch.Tensor, None]:
        p, labels, c_y, total = ctx.saved_tensors
        return _clipped_backward(p, labels, c_y, total, grad_out), None


def _clipped_backward(
    p: torch.Tensor,
    labels: torch.Tensor,
    c_y: torch.Tensor,
    total: torch.Tensor,
    grad_out: torch.Tensor | float,
) -> torch.Tensor:
    """d loss_i / d p scaled by ``grad_out`` (per sample or scalar): ``1 / sum c - [j == y] / c_y``
    inside the clip bounds, 0 where clipping acted (the bounds themselves pass gradient)."""
    grad = (grad_out / total)[:, None].expand_as(p).clone()
    grad.scatter_add_(1, labels[:, None], (-grad_out / c_y)[:, None])
    return grad.masked_fill_((p < EPSILON) | (p > 1.0 - EPSILON), 0.0)


def book_loss(predictions: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """fit's default ``loss_fn``: the book's loss on probabilities, per sample (§2.5.2)."""
    return sparse_categorical_crossentropy(labels, predictions)


def logits_loss(predictions: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``loss_fn="from_logits"``: softmax cross-entropy on logits, per sample."""
    return sparse_categorical_crossentropy(labels, predictions, from_logits=True)


def resolve_loss_fn(loss_fn: LossFn | str | None) -> LossFn:
    """``loss_fn`` as a callable: None (or the book's ``sparse_categorical_crossentropy``
    itself, whose argument order is Keras') is :func:`book_loss`; ``"from_logits"`` is
    :func:`logits_loss`; any other callable is taken as ``loss_fn(predictions, labels)``."""
    if loss_fn is None or loss_fn is sparse_categorical_crossentropy:
        return book_loss
    if isinstance(loss_fn, str):
        if loss_fn != "from_logits":
            raise ValueError(f'loss_fn must be "from_logits" or a callable, got {loss_fn!r}')
        return logits_loss
    if not callable(loss_fn):
        raise TypeError(
            f"loss_fn must be a callable loss_fn(predictions, labels), got {type(loss_fn).__name__}"
        )
    return loss_fn
