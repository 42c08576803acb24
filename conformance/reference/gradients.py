"""§2.4 by hand: the derivative, SGD on a curve, the chain rule, the scalar graph, dense grads."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["ScalarGraph", "chain_rule", "dense_sum_gradients", "derivative", "sgd_path"]


def derivative(f: Callable[[float], float], x: float, eps: float = 1e-6) -> float:
    if not eps > 0:
        raise ValueError(f"eps must be > 0, got {eps}")
    return (f(x + eps) - f(x - eps)) / (2 * eps)


def chain_rule(
    functions: Sequence[Callable[[float], float]],
    derivatives: Sequence[Callable[[float], float]],
    x: float,
) -> tuple[float, float]:
    """Value and slope of the composition, innermost first; slopes multiply along the chain."""
    if len(functions) != len(derivatives):
        raise ValueError(f"got {len(functions)} functions but {len(derivatives)} derivatives")
    if not functions:
        raise ValueError("functions must not be empty")
    value, slope = x, 1.0
    for fn, d in zip(functions, derivatives, strict=True):
        slope *= d(value)
        value = fn(value)
    return value, slope


def sgd_path(
    grad: Callable[[float], float],
    w0: float,
    learning_rate: float,
    steps: int,
    *,
    momentum: float = 0.0,
    nesterov: bool = False,
) -> list[float]:
    w, velocity, path = float(w0), 0.0, [float(w0)]
    for _ in range(steps):
        g = grad(w)
        velocity = momentum * velocity - learning_rate * g
        w = w + momentum * velocity - learning_rate * g if nesterov else w + velocity
        path.append(w)
        if not math.isfinite(w):
            path.extend([w] * (steps + 1 - len(path)))
            break
    return path


def dense_sum_gradients(
    x: np.ndarray, W: np.ndarray, b: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Gradients of ``sum(x @ W + b)`` w.r.t. W and b (TF's non-scalar-target rule).

    d/dW[i, j] = sum_k x[k, i] (the same in every column); d/db[j] = number of rows.
    """
    ones = np.ones((x.shape[0], W.shape[1]), dtype=np.result_type(x, W))
    return x.T @ ones, np.full(b.shape, float(x.shape[0]), dtype=b.dtype)


@dataclass(frozen=True)
class ScalarGraph:
    """x1 = x * w; x2 = x1 + b; loss_val = |y_true - x2| (book: x=2, w=3, b=1, y_true=4)."""

    x: float = 2.0
    w: float = 3.0
    b: float = 1.0
    y_true: float = 4.0

    def forward(self) -> dict[str, float]:
        x1 = self.x * self.w
        x2 = x1 + self.b
        return {"x1": x1, "x2": x2, "loss_val": abs(self.y_true - x2)}

    def backward_edges(self) -> dict[tuple[str, str], float]:
        x2 = self.forward()["x2"]
        if x2 == self.y_true:
            raise ValueError("abs is not differentiable at y_true == x2")
        return {
            ("loss_val", "x2"): math.copysign(1.0, x2 - self.y_true),
            ("x2", "x1"): 1.0,
            ("x2", "b"): 1.0,
            ("x1", "w"): self.x,
            ("x1", "x"): self.w,
        }

    def grad_by_paths(self, node: str) -> float:
        paths = {
            "x2": [("loss_val", "x2")],
            "x1": [("loss_val", "x2"), ("x2", "x1")],
            "b": [("loss_val", "x2"), ("x2", "b")],
            "w": [("loss_val", "x2"), ("x2", "x1"), ("x1", "w")],
            "x": [("loss_val", "x2"), ("x2", "x1"), ("x1", "x")],
        }
        if node not in paths:
            raise ValueError(f"node must be one of {sorted(paths)}, got {node!r}")
        edges = self.backward_edges()
        return math.prod(edges[e] for e in paths[node])
