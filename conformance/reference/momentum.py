"""§2.4.3 The momentum rules in NumPy (see dl_ch2.momentum for the full story)."""

from __future__ import annotations

import numpy as np

__all__ = [
    "keras_sgd_update",
    "local_global_curve",
    "local_global_curve_grad",
    "naive_momentum_update",
]


def naive_momentum_update(
    w: np.ndarray,
    gradient: np.ndarray,
    past_velocity: np.ndarray,
    learning_rate: float,
    momentum: float,
) -> tuple[np.ndarray, np.ndarray]:
    """The book's pseudocode (2nd edition sign); equals Keras' Nesterov rule."""
    velocity = past_velocity * momentum - learning_rate * gradient
    w = w + momentum * velocity - learning_rate * gradient
    return w, velocity


def keras_sgd_update(
    w: np.ndarray,
    gradient: np.ndarray,
    velocity: np.ndarray,
    learning_rate: float,
    momentum: float = 0.0,
    nesterov: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    if not 0 <= momentum <= 1:
        raise ValueError(f"momentum must be in [0, 1], got {momentum}")
    velocity = momentum * velocity - learning_rate * gradient
    if nesterov:
        return w + momentum * velocity - learning_rate * gradient, velocity
    return w + velocity, velocity


def local_global_curve(w: float) -> float:
    return w**4 / 4 - w**2 + 0.3 * w


def local_global_curve_grad(w: float) -> float:
    return w**3 - 2 * w + 0.3
