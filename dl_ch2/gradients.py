"""§2.4 The engine of neural networks: gradient-based optimization.

- §2.4.1 the derivative as a local slope (``derivative``, central differences);
- §2.4.3 stochastic gradient descent on a 1-D loss curve (``sgd_path``);
- §2.4.4 the chain rule (``chain_rule``) and the scalar computation graph of the book
  (``ScalarGraph``: x=2, w=3, b=1, y_true=4), with gradients both from autograd and by
  multiplying edge derivatives along paths of the backward graph;
- the GradientTape examples as ``GradientTape``, a thin mirror of TensorFlow's API over
  torch.autograd, including TF's rule that the gradient of a non-scalar target is the
  gradient of its sum.

The plain PyTorch way needs no tape: make a tensor that requires grad
(``torch.tensor(0.0, requires_grad=True)`` or ``w.requires_grad_()``), compute, call
``y.backward()`` (``y.sum().backward()`` for a non-scalar ``y``) and read ``x.grad``, or
``torch.autograd.grad(y, [x])``, which is what ``GradientTape.gradient`` calls. The mirror
differs from TensorFlow's tape in what it records and returns:

- TensorFlow records only the operations run inside the ``with`` block, on watched
  tensors (trainable ``tf.Variable``s, or ``tape.watch(t)``); torch records every
  operation on a tensor that requires grad, inside the block or not, so a target
  computed before the ``with`` is differentiated too, and there is no ``watch``: use
  ``variable(t)`` (or ``requires_grad_()``) before computing;
- for a source the target does not depend on, TensorFlow returns ``None``; this
  ``gradient`` returns zeros of the source's shape;
- as TensorFlow's default (non-persistent) tape, a second ``gradient`` call on the same
  target fails: autograd frees the graph after the first.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType

import torch

from dl_ch2._checks import require_positive_int, require_tensor

__all__ = [
    "GradientTape",
    "ScalarGraph",
    "chain_rule",
    "derivative",
    "sgd_path",
    "variable",
]


def derivative(f: Callable[[float], float], x: float, eps: float = 1e-6) -> float:
    """§2.4.1: the slope of f at x, ``(f(x + eps) - f(x - eps)) / (2 eps)``."""
    if not eps > 0:
        raise ValueError(f"eps must be > 0, got {eps}")
    return (f(x + eps) - f(x - eps)) / (2 * eps)


def chain_rule(
    functions: Sequence[Callable[[float], float]],
    derivatives: Sequence[Callable[[float], float]],
    x: float,
) -> tuple[float, float]:
    """§2.4.4: value and derivative of ``functions[-1](...functions[0](x))``.

    ``functions`` are applied innermost first (for ``f(g(x))`` pass ``[g, f]``; for
    ``f(g(h(j(x))))`` pass ``[j, h, g, f]``). The derivative is the product of each local
    derivative at its own input: ``grad(y, x) = grad(y, x3) * grad(x3, x2) * ...``.
    """
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
    """§2.4.3: positions of SGD on a 1-D loss curve, ``steps + 1`` of them starting at ``w0``.

    With ``momentum`` the update is Keras' (``velocity = momentum * velocity - lr * g``,
    then ``w += velocity``, or ``w += momentum * velocity - lr * g`` with ``nesterov``).
    Divergence shows as rapidly growing (eventually inf/nan) positions, not as an error.
    """
    require_positive_int("steps", steps)
    w, velocity, path = float(w0), 0.0, [float(w0)]
    for _ in range(steps):
        g = grad(w)
        velocity = momentum * velocity - learning_rate * g
        w = w + momentum * velocity - learning_rate * g if nesterov else w + velocity
        path.append(w)
        if not math.isfinite(w):
            # keep the length promised; the rest of a diverged path stays non-finite
            path.extend([w] * (steps + 1 - len(path)))
            break
    return path


def variable(value: torch.Tensor | float) -> torch.Tensor:
    """The book's ``tf.Variable``: a float tensor that records operations for autograd."""
    t = value if isinstance(value, torch.Tensor) else torch.tensor(value)
    if not t.dtype.is_floating_point:
        t = t.to(torch.get_default_dtype())
    return t.detach().clone().requires_grad_(True)


class GradientTape:
    """§2.4.4: TensorFlow's ``GradientTape`` over torch.autograd.

    torch records every operation on tensors that require grad, so the tape itself only
    scopes the example; ``gradient`` does the work. As in TF, a non-scalar ``target``
    is differentiated through its sum, and ``sources`` may be a tensor or a list of them.
    Unlike TF: operations outside the ``with`` block are recorded too, and a source the
    target does not depend on gets zeros, not ``None`` (the module's docstring says more).
    """

    def __enter__(self) -> GradientTape:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None

    def gradient(
        self,
        target: torch.Tensor,
        sources: torch.Tensor | Sequence[torch.Tensor],
    ) -> torch.Tensor | list[torch.Tensor]:
        require_tensor("target", target)
        single = isinstance(sources, torch.Tensor)
        srcs: list[torch.Tensor] = [sources] if single else list(sources)  # type: ignore[list-item]
        for i, s in enumerate(srcs):
            require_tensor(f"sources[{i}]", s)
            if not s.requires_grad:
                raise ValueError(
                    f"sources[{i}] does not require grad; create it with variable(...) "
                    "before computing the target"
                )
        if not target.requires_grad:
            raise ValueError("target does not depend on any source (it has no grad_fn)")
        grads = torch.autograd.grad(target.sum(), srcs, allow_unused=True)
        # TF returns None for unconnected sources; zeros are less surprising in torch code.
        out = [torch.zeros_like(s) if g is None else g for s, g in zip(srcs, grads, strict=True)]
        return out[0] if single else out


@dataclass(frozen=True)
class ScalarGraph:
    """§2.4.4 The book's basic computation graph: ``x1 = x * w``, ``x2 = x1 + b``,
    ``loss_val = abs(y_true - x2)``.

    With the book's values x=2, w=3, b=1, y_true=4: x1=6, x2=7, loss_val=3 and
    grad(loss_val, w)=2, grad(loss_val, b)=1. (Erratum: the review of the 2nd edition
    mixes these with a second set, x=3, w=2, b=3, y_true=8, and gets grad(loss, w)=3.)
    """

    x: float = 2.0
    w: float = 3.0
    b: float = 1.0
    y_true: float = 4.0

    def forward(self) -> dict[str, float]:
        x1 = self.x * self.w
        x2 = x1 + self.b
        return {"x1": x1, "x2": x2, "loss_val": abs(self.y_true - x2)}

    def backward_edges(self) -> dict[tuple[str, str], float]:
        """grad(upper, lower) for each edge of the backward graph, at the forward values."""
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
        """grad(loss_val, node): the product of edge derivatives on the path to ``node``."""
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

    def grad_by_autograd(self) -> dict[str, float]:
        """grad(loss_val, w) and grad(loss_val, b) from torch.autograd, in float64."""
        x = torch.tensor(self.x, dtype=torch.float64)
        w = torch.tensor(self.w, dtype=torch.float64, requires_grad=True)
        b = torch.tensor(self.b, dtype=torch.float64, requires_grad=True)
        loss_val = torch.abs(self.y_true - (x * w + b))
        gw, gb = torch.autograd.grad(loss_val, [w, b])
        return {"w": float(gw), "b": float(gb)}
