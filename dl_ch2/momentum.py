"""§2.4.3 Momentum.

Three update rules and how they map onto ``torch.optim.SGD``:

- the book's rule (2nd edition)::

      velocity = past_velocity * momentum - learning_rate * gradient
      w = w + momentum * velocity - learning_rate * gradient

  whose last line is Keras' *Nesterov* rule, not plain momentum. (Erratum: the 1st
  edition's first line has ``+ learning_rate * gradient``, which pushes uphill.)
- Keras ``SGD(momentum=m)``: ``velocity = m * velocity - lr * g``; ``w = w + velocity``.
- Keras ``SGD(momentum=m, nesterov=True)``: same velocity; ``w = w + m * velocity - lr * g``.

``torch.optim.SGD(lr, momentum=m, nesterov=...)`` keeps a buffer ``buf = m * buf + g``
(the first step sets ``buf = g``) and steps ``w -= lr * buf`` (plain) or
``w -= lr * (g + m * buf)`` (Nesterov). With a constant learning rate the two are the same
trajectory, with Keras' ``velocity == -lr * buf`` at every step.

The 1-D curve ``local_global_curve`` has a local minimum near 1.332 and the global one
near -1.484; from w0=2.5 with lr=0.01, plain SGD stops in the local minimum and momentum
0.9 rolls over the hump into the global one (the story of figure 2.13).
"""

from __future__ import annotations

import torch

__all__ = [
    "GLOBAL_MINIMUM",
    "LOCAL_MINIMUM",
    "keras_sgd_update",
    "keras_velocity_from_torch_buffer",
    "local_global_curve",
    "local_global_curve_grad",
    "naive_momentum_update",
]


def naive_momentum_update(
    w: torch.Tensor,
    gradient: torch.Tensor,
    past_velocity: torch.Tensor,
    learning_rate: float,
    momentum: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """§2.4.3: one step of the book's momentum pseudocode; returns ``(w, velocity)``."""
    velocity = past_velocity * momentum - learning_rate * gradient
    w = w + momentum * velocity - learning_rate * gradient
    return w, velocity


def keras_sgd_update(
    w: torch.Tensor,
    gradient: torch.Tensor,
    velocity: torch.Tensor,
    learning_rate: float,
    momentum: float = 0.0,
    nesterov: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One step of Keras 2.6 ``SGD``; returns ``(w, velocity)``."""
    if momentum < 0 or momentum > 1:
        raise ValueError(f"momentum must be in [0, 1], got {momentum}")
    velocity = momentum * velocity - learning_rate * gradient
    w = w + momentum * velocity - learning_rate * gradient if nesterov else w + velocity
    return w, velocity


def keras_velocity_from_torch_buffer(buffer: torch.Tensor, learning_rate: float) -> torch.Tensor:
    """Keras' velocity for torch's ``momentum_buffer`` at a constant learning rate."""
    return -learning_rate * buffer


#: Minima of ``local_global_curve`` (roots of w^3 - 2w + 0.3), to 1e-8.
LOCAL_MINIMUM = 1.33222074
GLOBAL_MINIMUM = -1.48396789


def local_global_curve(w: float) -> float:
    """A 1-D loss with a local minimum (w ≈ 1.332) and a lower, global one (w ≈ -1.484)."""
    return w**4 / 4 - w**2 + 0.3 * w


def local_global_curve_grad(w: float) -> float:
    return w**3 - 2 * w + 0.3
