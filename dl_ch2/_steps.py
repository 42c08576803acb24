"""The shape of a training step, as ``fit`` and ``train_first_example`` call it.

Each loop chooses its step once, before the loop: the chapter's step bound to its model
and optimizer, optionally compiled (``CompiledStep``) and optionally data-parallel
(``DataParallel.wrap``). Both wrappers see the same two kinds of callables defined here,
so neither the loops nor the wrappers import one another.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import torch

__all__ = ["BatchStep", "GradientTransform", "ShardStep", "StepWrapper", "then"]

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
