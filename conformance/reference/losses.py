"""§2.5.2 sparse categorical crossentropy, forward and backward by hand.

Probabilities path (TF 2.6 eager): c = clip(p, 1e-7, 1 - 1e-7); loss = -log c_y + log sum c.
d loss / d p_j = (1 / sum c - [j == y] / c_j) where 1e-7 <= p_j <= 1 - 1e-7, else 0.
Logits path: loss = logsumexp(z) - z_y; d loss / d z = softmax(z) - onehot(y).
"""

from __future__ import annotations

import numpy as np

from conformance.reference._checks import require_array, shape_str

__all__ = [
    "EPSILON",
    "sparse_categorical_crossentropy",
    "sparse_categorical_crossentropy_backward",
]

EPSILON = 1e-7


def _check(labels: object, predictions: object, what: str) -> tuple[np.ndarray, np.ndarray]:
    y = require_array("labels", labels)
    p = require_array(what, predictions)
    if p.ndim != 2:
        raise ValueError(f"{what} must have shape (batch, classes), got {shape_str(p.shape)}")
    if p.dtype.kind != "f":
        raise TypeError(f"{what} must be floating point, got {p.dtype}")
    if y.dtype.kind not in "iu":
        raise TypeError(f"labels must be integer class indices, got {y.dtype}")
    if y.shape != p.shape[:1]:
        raise ValueError(
            f"labels must have shape (batch,) = {shape_str(p.shape[:1])} to match "
            f"{what} {shape_str(p.shape)}, got {shape_str(y.shape)}"
        )
    if y.size and (y.min() < 0 or y.max() >= p.shape[1]):
        raise ValueError(
            f"labels must lie in [0, {p.shape[1]}) for {p.shape[1]} classes, got values in "
            f"[{int(y.min())}, {int(y.max())}]"
        )
    return y, p


def sparse_categorical_crossentropy(
    labels: np.ndarray, predictions: np.ndarray, *, from_logits: bool = False
) -> np.ndarray:
    """Per-sample loss, shape (batch,)."""
    what = "logits" if from_logits else "probabilities"
    y, p = _check(labels, predictions, what)
    rows = np.arange(len(y))
    if from_logits:
        # -log_softmax: log(sum(exp(z - m))) - (z_y - m). Adding m back first, as
        # logsumexp(z) - z_y, rounds 1000.41 to float32's spacing of 6e-5 at 1000.
        shifted = p - p.max(axis=1, keepdims=True)
        return np.log(np.exp(shifted).sum(axis=1)) - shifted[rows, y]
    lo, hi = p.dtype.type(EPSILON), p.dtype.type(1) - p.dtype.type(EPSILON)
    c = np.clip(p, lo, hi)
    return np.log(c.sum(axis=1)) - np.log(c[rows, y])


def sparse_categorical_crossentropy_backward(
    labels: np.ndarray, predictions: np.ndarray, *, from_logits: bool = False
) -> np.ndarray:
    """Gradient of the *mean* batch loss w.r.t. ``predictions``."""
    what = "logits" if from_logits else "probabilities"
    y, p = _check(labels, predictions, what)
    n = len(y)
    rows = np.arange(n)
    if from_logits:
        g = np.exp(p - p.max(axis=1, keepdims=True))
        g /= g.sum(axis=1, keepdims=True)
        g[rows, y] -= 1
        g /= n
        return g
    lo, hi = p.dtype.type(EPSILON), p.dtype.type(1) - p.dtype.type(EPSILON)
    c = np.clip(p, lo, hi)
    g = np.empty_like(p)
    g[...] = (1 / c.sum(axis=1))[:, None]
    g[rows, y] -= 1 / c[rows, y]
    g[(p < lo) | (p > hi)] = 0  # clipping passes no gradient (inclusive bounds, as TF/torch)
    g /= n
    return g
