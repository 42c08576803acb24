"""Optimizers in their Keras 2.6 forms, updating NumPy weights in place.

- ``SGD(learning_rate, momentum=0, nesterov=False)``: velocity = m * v - lr * g;
  w += v (plain) or w += m * v - lr * g (Nesterov); plain SGD when m == 0.
- ``RMSprop(learning_rate=1e-3, rho=0.9, epsilon=1e-7)``: rms = rho * rms + (1 - rho) g^2;
  w -= lr * g / (sqrt(rms) + epsilon), epsilon outside the square root.

State is keyed by the weight's position in the list given to ``apply_gradients``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["SGD", "RMSprop"]


def _pairs(gradients: Sequence[np.ndarray], weights: Sequence[np.ndarray]) -> None:
    if len(gradients) != len(weights):
        raise ValueError(f"got {len(gradients)} gradients for {len(weights)} weights")
    for i, (g, w) in enumerate(zip(gradients, weights, strict=True)):
        if g.shape != w.shape:
            raise ValueError(
                f"gradients[{i}] has shape {tuple(g.shape)} but weights[{i}] has "
                f"shape {tuple(w.shape)}"
            )


class SGD:
    def __init__(
        self, learning_rate: float = 0.01, momentum: float = 0.0, nesterov: bool = False
    ) -> None:
        if not 0 <= momentum <= 1:
            raise ValueError(f"momentum must be in [0, 1], got {momentum}")
        self.learning_rate, self.momentum, self.nesterov = learning_rate, momentum, nesterov
        self.velocities: list[np.ndarray] | None = None

    def apply_gradients(
        self, gradients: Sequence[np.ndarray], weights: Sequence[np.ndarray]
    ) -> None:
        _pairs(gradients, weights)
        lr, m = self.learning_rate, self.momentum
        if m == 0:
            for g, w in zip(gradients, weights, strict=True):
                w -= lr * g
            return
        if self.velocities is None:
            self.velocities = [np.zeros_like(w) for w in weights]
        for g, w, v in zip(gradients, weights, self.velocities, strict=True):
            v *= m
            v -= lr * g
            if self.nesterov:
                w += m * v - lr * g
            else:
                w += v


class RMSprop:
    def __init__(
        self, learning_rate: float = 1e-3, rho: float = 0.9, epsilon: float = 1e-7
    ) -> None:
        self.learning_rate, self.rho, self.epsilon = learning_rate, rho, epsilon
        self.rms: list[np.ndarray] | None = None

    def apply_gradients(
        self, gradients: Sequence[np.ndarray], weights: Sequence[np.ndarray]
    ) -> None:
        _pairs(gradients, weights)
        if self.rms is None:
            self.rms = [np.zeros_like(w) for w in weights]
        for g, w, r in zip(gradients, weights, self.rms, strict=True):
            r *= self.rho
            r += (1 - self.rho) * np.square(g)
            w -= self.learning_rate * g / (np.sqrt(r) + self.epsilon)
