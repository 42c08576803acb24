"""The shape of a training step, as ``fit`` and ``train_first_example`` call it.

Each loop chooses its step once, before the loop: the chapter's step bound to its model
and optimizer, optionally compiled (``CompiledStep``) and optionally data-parallel
(``DataParallel.wrap``). Both wrappers see the same two kinds of callables defined here,
so neither the loops nor the wrappers import one another. :func:`modes` is the mode a
step (or a check, or an evaluation) runs a model in, as a plain PyTorch loop sets it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Protocol

import torch
from torch import nn

__all__ = ["BatchStep", "GradientTransform", "ShardStep", "StepWrapper", "modes", "then"]

#: Maps a step's list of gradients before the update (an all-reduce, a clip...).
GradientTransform = Callable[[list[torch.Tensor]], Sequence[torch.Tensor]]

#: What a loop calls for each batch: ``loss = step(images_batch, labels_batch)``.
BatchStep = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class ShardStep(Protocol):
    """A bound chapter step that also takes a transform to run on its gradients first."""

    def __call__(
        self,
        images_batch: torch.Tensor,
        labels_batch: torch.Tensor,
        transform: GradientTransform | None = None,
    ) -> torch.Tensor: ...


class StepWrapper(Protocol):
    """Turns a step into a data-parallel one (``dl_ch2.distributed.DataParallel``)."""

    def wrap(self, step: ShardStep, weights: Sequence[torch.Tensor]) -> BatchStep: ...


def then(
    first: GradientTransform | None, second: GradientTransform | None
) -> GradientTransform | None:
    """``first``, then ``second``, on a list of gradients (either may be None)."""
    if first is None or second is None:
        return first or second

    def both(gradients: list[torch.Tensor]) -> Sequence[torch.Tensor]:
        return second(list(first(gradients)))

    return both


@contextlib.contextmanager
def modes(model: object, training: bool) -> Iterator[None]:
    """``model.train(training)`` inside the block; afterwards every submodule gets back its
    own mode (a BatchNorm the caller kept in eval mode inside a training model stays so).

    Anything but an ``nn.Module`` (``evaluate`` takes any callable) is left alone.
    """
    if not isinstance(model, nn.Module):
        yield
        return
    saved = [(m, m.training) for m in model.modules()]
    model.train(training)
    try:
        yield
    finally:
        for m, mode in saved:
            m.training = mode
