"""§2.5.3's loss, watched: the errors ``fit`` and ``train_first_example`` raise when it goes bad.

The notebook prints the loss and trusts it. The port keeps each batch's loss on the device
and looks at it only at the notebook's log points (every ``log_every`` batches and at an
epoch's end), so watching costs no host sync per step:

- a NaN or infinite loss raises ``NonFiniteLossError`` naming the first bad epoch and
  batch, and saying whether the weights took the bad value in too (a NaN pixel's gradient
  reaches every weight of its batch's update);
- a loss stuck near its clipping ceiling, far above where it began, raises
  ``DivergenceError`` (clipping bounds the loss, so a learning rate far too large never
  makes it non-finite).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from dl_ch2.losses import EPSILON

__all__ = [
    "LOSS_CEILING",
    "DivergenceError",
    "LossMonitor",
    "NonFiniteLossError",
    "check_finite",
]

#: The most one sample's loss can be: clipping keeps every probability >= 1e-7.
LOSS_CEILING = -math.log(EPSILON)


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite."""

    def __init__(
        self,
        epoch: int,
        batch: int,
        loss: float,
        message: str | None = None,
        *,
        weights_finite: bool | None = None,
    ) -> None:
        if weights_finite is None:
            state = ""
        elif weights_finite:
            state = "; the weights are still finite"
        else:
            state = (
                "; the weights now hold NaN/inf too (that batch's update carried it into "
                "them): rebuild or reload the model before training again"
            )
        super().__init__(
            message
            or (
                f"loss became non-finite ({loss}) at epoch {epoch}, batch {batch}{state}; "
                "check the inputs for NaN/inf or lower the learning rate"
            )
        )
        self.epoch = epoch
        self.batch = batch
        self.loss = loss
        self.weights_finite = weights_finite


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


def _all_finite(weights: Sequence[torch.Tensor]) -> bool:
    return all(bool(torch.isfinite(w.detach()).all()) for w in weights)


def check_finite(
    losses: list[torch.Tensor],
    start: int,
    epoch: int,
    weights: Sequence[torch.Tensor] | None = None,
) -> None:
    """Raise ``NonFiniteLossError`` at the first NaN/inf in ``losses[start:]`` (one sync).

    With ``weights``, the error also says whether they are still finite.
    """
    bad = ~torch.isfinite(torch.stack(losses[start:]))
    if bool(bad.any()):
        first = int(bad.nonzero()[0, 0])
        finite = None if weights is None else _all_finite(weights)
        raise NonFiniteLossError(
            epoch, start + first, float(losses[start + first]), weights_finite=finite
        )


class LossMonitor:
    """The checks at the log points: two host syncs each, nothing per step.

    The losses since the previous check must be finite; and their mean (over the last 10
    batches at least) must not sit at half the clipping ceiling or above while being 1.5
    times the run's first loss or more (``divergence=False`` leaves that rule out). The
    first loss stays on the device.
    """

    MIN_WINDOW = 10

    def __init__(
        self, weights: Sequence[torch.Tensor] | None = None, *, divergence: bool = True
    ) -> None:
        self.weights = weights
        self.divergence = divergence
        self.first: torch.Tensor | None = None
        self.checked = 0  # losses of this epoch already checked
        self.epoch = -1

    def check(self, losses: list[torch.Tensor], epoch: int) -> None:
        """Check the losses of ``epoch`` not checked yet (``losses`` is the epoch's so far)."""
        if epoch != self.epoch:
            self.epoch, self.checked = epoch, 0
        if self.first is None:
            self.first = losses[0]
        check_finite(losses, self.checked, epoch, self.weights)
        if self.divergence:
            start = max(0, min(self.checked, len(losses) - self.MIN_WINDOW))
            recent = torch.stack(losses[start:]).mean()
            if bool((recent >= LOSS_CEILING / 2) & (recent >= 1.5 * self.first)):
                raise DivergenceError(
                    epoch, len(losses) - 1, float(recent), float(self.first), len(losses) - start
                )
        self.checked = len(losses)
