"""§2.1 The first example in NumPy: Keras init, logits + cross-entropy, Keras RMSprop.

Weights follow torch's ``nn.Linear`` layout, (out, in), so they can be copied one-to-one
between this model and ``dl_ch2.first_example.build_first_example_model``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from conformance.reference._checks import require_float_dtype, require_positive_int
from conformance.reference.batch_generator import num_batches
from conformance.reference.losses import (
    sparse_categorical_crossentropy,
    sparse_categorical_crossentropy_backward,
)
from conformance.reference.naive_model import softmax
from conformance.reference.optimizers import RMSprop

__all__ = ["FirstExampleModel", "glorot_uniform_limit", "train_first_example"]


def glorot_uniform_limit(fan_in: int, fan_out: int) -> float:
    return math.sqrt(
        6.0 / (require_positive_int("fan_in", fan_in) + require_positive_int("fan_out", fan_out))
    )


class FirstExampleModel:
    """784 -> 512 relu -> 10 logits; ``weights`` = [W1 (512, 784), b1, W2 (10, 512), b2]."""

    def __init__(self, *, dtype: Any = np.float64, rng: np.random.Generator | None = None) -> None:
        dt = require_float_dtype("dtype", dtype)
        rng = rng if rng is not None else np.random.default_rng()
        shapes = [(512, 784), (10, 512)]
        self.weights: list[np.ndarray] = []
        for out_f, in_f in shapes:
            limit = glorot_uniform_limit(in_f, out_f)
            self.weights.append((rng.random((out_f, in_f)) * 2 * limit - limit).astype(dt))
            self.weights.append(np.zeros(out_f, dtype=dt))

    def logits(self, images: np.ndarray) -> np.ndarray:
        W1, b1, W2, b2 = self.weights
        return np.maximum(images @ W1.T + b1, 0) @ W2.T + b2

    def predict(self, images: np.ndarray) -> np.ndarray:
        return softmax(self.logits(images))

    __call__ = predict

    def loss_and_gradients(
        self, images: np.ndarray, labels: np.ndarray
    ) -> tuple[float, list[np.ndarray]]:
        loss, grads, _ = self.loss_gradients_and_hits(images, labels)
        return loss, grads

    def loss_gradients_and_hits(
        self, images: np.ndarray, labels: np.ndarray
    ) -> tuple[float, list[np.ndarray], int]:
        """The batch's loss, gradients and number of correct predictions (one forward)."""
        W1, b1, W2, b2 = self.weights
        z1 = images @ W1.T + b1
        h = np.maximum(z1, 0)
        z2 = h @ W2.T + b2
        loss = float(sparse_categorical_crossentropy(labels, z2, from_logits=True).mean())
        dz2 = sparse_categorical_crossentropy_backward(labels, z2, from_logits=True)
        dW2, db2 = dz2.T @ h, dz2.sum(axis=0)
        dz1 = (dz2 @ W2) * (z1 > 0)
        dW1, db1 = dz1.T @ images, dz1.sum(axis=0)
        return loss, [dW1, db1, dW2, db2], int((z2.argmax(axis=1) == labels).sum())


def train_first_example(
    model: FirstExampleModel,
    images: np.ndarray,
    labels: np.ndarray,
    *,
    epochs: int = 5,
    batch_size: int = 128,
    optimizer: RMSprop | None = None,
    rng: np.random.Generator | None = None,
    on_epoch_end: Callable[[int, float], Any] | None = None,
    keras_accuracy: list[float] | None = None,
) -> list[float]:
    """Keras-style fit: reshuffle every epoch, RMSprop; returns mean loss per epoch.

    ``keras_accuracy`` gets each epoch's Keras-printed accuracy: correct predictions of
    each batch's forward pass (before its update), over the epoch's samples.
    """
    require_positive_int("epochs", epochs)
    require_positive_int("batch_size", batch_size)
    if len(images) != len(labels) or len(images) == 0:
        raise ValueError(
            f"images and labels must be non-empty and of equal length, got {len(images)} "
            f"and {len(labels)}"
        )
    opt = optimizer if optimizer is not None else RMSprop()
    rng = rng if rng is not None else np.random.default_rng()
    n = len(images)
    steps = num_batches(n, batch_size)
    out: list[float] = []
    for epoch in range(epochs):
        perm = rng.permutation(n)
        xs, ys = images[perm], labels[perm]
        total, correct = 0.0, 0
        for k in range(steps):
            xb, yb = (
                xs[k * batch_size : (k + 1) * batch_size],
                ys[k * batch_size : (k + 1) * batch_size],
            )
            loss, grads, hits = model.loss_gradients_and_hits(xb, yb)
            opt.apply_gradients(grads, model.weights)
            total, correct = total + loss * len(xb), correct + hits
        out.append(total / n)
        if keras_accuracy is not None:
            keras_accuracy.append(correct / n)
        if on_epoch_end is not None:
            on_epoch_end(epoch, out[-1])
    return out
