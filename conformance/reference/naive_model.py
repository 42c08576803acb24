"""§2.5.1 NaiveDense and NaiveSequential in NumPy, with hand-derived backward passes.

Each activation carries its own backward rule (see ``ACTIVATION_BACKWARD``); a model using
any other activation cannot be differentiated and says so instead of returning a wrong
gradient.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from conformance.reference._checks import (
    require_float_dtype,
    require_positive_int,
    shape_str,
)

__all__ = [
    "ACTIVATION_BACKWARD",
    "NaiveDense",
    "NaiveSequential",
    "build_naive_model",
    "identity",
    "relu",
    "softmax",
]

Activation = Callable[[np.ndarray], np.ndarray]


def relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0)


def softmax(x: np.ndarray) -> np.ndarray:
    """Softmax over the last axis, shifted by the row max for stability."""
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    e /= e.sum(axis=-1, keepdims=True)
    return e


def identity(x: np.ndarray) -> np.ndarray:
    return x


def _relu_backward(z: np.ndarray, a: np.ndarray, da: np.ndarray) -> np.ndarray:
    # d relu(z)/dz = 1 for z > 0, else 0 (torch and TF use 0 at z == 0 too)
    return da * (z > 0)


def _softmax_backward(z: np.ndarray, a: np.ndarray, da: np.ndarray) -> np.ndarray:
    # Jacobian-vector product of softmax: a * (da - <da, a>)
    return a * (da - (da * a).sum(axis=-1, keepdims=True))


def _identity_backward(z: np.ndarray, a: np.ndarray, da: np.ndarray) -> np.ndarray:
    return da


#: dz from (z, a, da) for each supported activation.
ACTIVATION_BACKWARD: dict[
    Activation, Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]
] = {
    relu: _relu_backward,
    softmax: _softmax_backward,
    identity: _identity_backward,
}


class NaiveDense:
    """§2.5.1: ``activation(inputs @ W + b)``; W (input_size, output_size) from U[0, 0.1)."""

    def __init__(
        self,
        input_size: int,
        output_size: int,
        activation: Activation,
        *,
        dtype: Any = np.float64,
        rng: np.random.Generator | None = None,
    ) -> None:
        require_positive_int("input_size", input_size)
        require_positive_int("output_size", output_size)
        if not callable(activation):
            raise TypeError(f"activation must be callable, got {type(activation).__name__}")
        dt = require_float_dtype("dtype", dtype)
        rng = rng if rng is not None else np.random.default_rng()
        self.input_size, self.output_size = input_size, output_size
        self.activation = activation
        # like tf.random.uniform(minval=0, maxval=1e-1): U[0, 1) scaled, kept below maxval
        w = (rng.random((input_size, output_size)) * 0.1).astype(dt)
        top = np.nextafter(dt.type(0.1), dt.type(0))
        self.W = np.minimum(w, top)
        self.b = np.zeros(output_size, dtype=dt)

    def __call__(self, inputs: np.ndarray) -> np.ndarray:
        return self.forward(inputs)[1]

    def forward(self, inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Returns ``(z, a)``: the pre-activation and the activation."""
        if not isinstance(inputs, np.ndarray):
            raise TypeError(f"inputs must be a numpy.ndarray, got {type(inputs).__name__}")
        if inputs.ndim < 1 or inputs.shape[-1] != self.input_size:
            raise ValueError(
                f"inputs of shape {shape_str(inputs.shape)} do not fit a NaiveDense with "
                f"input_size={self.input_size} (W {shape_str(self.W.shape)}): the last axis "
                f"must be {self.input_size}"
            )
        z = inputs @ self.W
        z += self.b
        return z, self.activation(z)

    def backward(
        self,
        inputs: np.ndarray,
        z: np.ndarray,
        a: np.ndarray,
        da: np.ndarray,
        need_input_grad: bool = True,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Gradients ``(dW, db, d_inputs)`` from the gradient ``da`` w.r.t. the output."""
        rule = ACTIVATION_BACKWARD.get(self.activation)
        if rule is None:
            name = getattr(self.activation, "__name__", repr(self.activation))
            raise ValueError(
                f"no backward rule for activation {name!r}; the reference differentiates "
                "only relu, softmax and identity from conformance.reference"
            )
        dz = rule(z, a, da)
        dW = inputs.T @ dz
        db = dz.sum(axis=0)
        d_inputs = dz @ self.W.T if need_input_grad else None
        return dW, db, d_inputs

    @property
    def weights(self) -> list[np.ndarray]:
        return [self.W, self.b]


class NaiveSequential:
    """§2.5.1: layers called in order; ``weights`` concatenates theirs."""

    def __init__(self, layers: Iterable[NaiveDense]) -> None:
        self.layers = list(layers)
        for i, layer in enumerate(self.layers):
            if not isinstance(layer, NaiveDense):
                raise TypeError(f"layers[{i}] must be a NaiveDense, got {type(layer).__name__}")

    def __call__(self, inputs: np.ndarray) -> np.ndarray:
        x = inputs
        for layer in self.layers:
            x = layer(x)
        return x

    @property
    def weights(self) -> list[np.ndarray]:
        weights: list[np.ndarray] = []
        for layer in self.layers:
            weights += layer.weights
        return weights

    def set_weights(self, values: Iterable[np.ndarray]) -> None:
        """Copy ``values`` into the weights in place (so optimizers keep their handles)."""
        values = list(values)
        weights = self.weights
        if len(values) != len(weights):
            raise ValueError(f"got {len(values)} arrays for {len(weights)} weights")
        for i, (w, v) in enumerate(zip(weights, values, strict=True)):
            v = np.asarray(v)
            if v.shape != w.shape:
                raise ValueError(
                    f"values[{i}] has shape {shape_str(v.shape)}, weights[{i}] has "
                    f"{shape_str(w.shape)}"
                )
            w[...] = v


def build_naive_model(
    *, dtype: Any = np.float64, rng: np.random.Generator | None = None
) -> NaiveSequential:
    """§2.5.1: 784 -> 512 (relu) -> 10 (softmax)."""
    rng = rng if rng is not None else np.random.default_rng()
    return NaiveSequential(
        [
            NaiveDense(28 * 28, 512, relu, dtype=dtype, rng=rng),
            NaiveDense(512, 10, softmax, dtype=dtype, rng=rng),
        ]
    )
