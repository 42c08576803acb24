"""The ``numpy`` adapter: the pure-NumPy reference, graded like any other implementation."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

import conformance.reference as ref
from conformance.adapter import FullAdapter
from conformance.reference.first_example import FirstExampleModel, glorot_uniform_limit
from conformance.reference.gradients import ScalarGraph, dense_sum_gradients

ACTIVATIONS = {"relu": ref.relu, "softmax": ref.softmax, "identity": ref.identity}


class NumpyAdapter:
    name = "numpy-reference"
    version = "0.1.0"
    devices: Sequence[str] = ("cpu",)
    dtypes: Sequence[str] = ("float64", "float32")
    capabilities = frozenset(
        {
            "naive_ops",
            "autodiff",
            "training",
            "momentum",
            "rmsprop",
            "keras_init",
            "random_init",
            "mnist_training",
            "input_checks",
            "single_sample",
            "dtype_preservation",
        }
    )

    def __init__(self) -> None:
        self.dtype = np.float64

    # -- conversion --------------------------------------------------------------------------
    def asarray(self, x: np.ndarray, dtype: str | None = None) -> np.ndarray:
        return np.array(x, dtype=dtype) if dtype else np.array(x)

    def to_numpy(self, x: Any) -> np.ndarray:
        return np.asarray(x)

    # -- §2.1 ---------------------------------------------------------------------------------
    def preprocess(self, images: Any) -> Any:
        if images.ndim != 3 or images.shape[1:] != (28, 28):
            raise ValueError(f"images must have shape (N, 28, 28), got {images.shape}")
        return images.reshape((len(images), 28 * 28)).astype("float32") / 255

    # -- §2.3 ---------------------------------------------------------------------------------
    def add(self, x: Any, y: Any) -> Any:
        return x + y

    def relu(self, x: Any) -> Any:
        return np.maximum(x, 0)

    def maximum(self, x: Any, y: Any) -> Any:
        return np.maximum(x, y)

    def dot(self, x: Any, y: Any) -> Any:
        return np.dot(x, y)

    def reshape(self, x: Any, shape: tuple[int, ...]) -> Any:
        return x.reshape(shape)

    def transpose(self, x: Any) -> Any:
        return np.transpose(x)

    def expand_dims(self, x: Any, axis: int) -> Any:
        return np.expand_dims(x, axis)

    def getitem(self, x: Any, index: Any) -> Any:
        return x[index]

    def stretch(self, y: Any, shape: tuple[int, ...]) -> Any:
        target = tuple(shape)
        if y.ndim > len(target) or y.shape != target[len(target) - y.ndim :]:
            raise ValueError(f"cannot stretch y of shape {y.shape} to {target}")
        out = y
        for _ in range(len(target) - y.ndim):
            out = np.expand_dims(out, axis=0)  # the book's expand_dims, then concatenate
        for axis in range(len(target) - y.ndim - 1, -1, -1):
            out = np.concatenate([out] * target[axis], axis=axis)
        return out

    def vector_add(self, a: Any, b: Any) -> Any:
        if a.shape != b.shape:
            raise ValueError(
                f"vector_add needs a and b of the same shape, got {a.shape}, {b.shape}"
            )
        return a + b

    def rotate(self, points: Any, theta: float) -> Any:
        if points.ndim < 1 or points.shape[-1] != 2:
            raise ValueError(f"points must have shape (..., 2), got {points.shape}")
        c, s = math.cos(theta), math.sin(theta)
        # integer points rotate in float64: an integer matrix would truncate cos and sin
        dtype = points.dtype if points.dtype.kind == "f" else np.float64
        return np.dot(points, np.array([[c, s], [-s, c]], dtype=dtype))

    # naive ops
    naive_relu = staticmethod(ref.naive_relu)
    naive_add = staticmethod(ref.naive_add)
    naive_add_matrix_and_vector = staticmethod(ref.naive_add_matrix_and_vector)
    naive_vector_dot = staticmethod(ref.naive_vector_dot)
    naive_matrix_vector_dot = staticmethod(ref.naive_matrix_vector_dot)
    naive_matrix_vector_dot_via_vector_dot = staticmethod(
        ref.naive_matrix_vector_dot_via_vector_dot
    )
    naive_matrix_dot = staticmethod(ref.naive_matrix_dot)

    # -- §2.5 model --------------------------------------------------------------------------
    def dense_model(
        self,
        layers: Sequence[tuple[int, int, str]],
        weights: Sequence[np.ndarray] | None,
        seed: int,
    ) -> Any:
        rng = np.random.default_rng(seed)
        dtype = weights[0].dtype if weights is not None else self.dtype
        model = ref.NaiveSequential(
            [ref.NaiveDense(i, o, ACTIVATIONS[a], dtype=dtype, rng=rng) for i, o, a in layers]
        )
        if weights is not None:
            model.set_weights(weights)
        return model

    def model_weights(self, model: Any) -> list[Any]:
        return list(model.weights)

    def predict(self, model: Any, x: Any) -> Any:
        return model(x)

    def batches(
        self,
        images: Any,
        labels: Any,
        batch_size: int,
        shuffle: bool = False,
        seed: int | None = None,
    ) -> list[tuple[Any, Any]]:
        rng = np.random.default_rng(seed) if shuffle else None
        return list(ref.BatchGenerator(images, labels, batch_size, shuffle=shuffle, rng=rng))

    def sparse_categorical_crossentropy(
        self, labels: Any, predictions: Any, from_logits: bool = False
    ) -> Any:
        return ref.sparse_categorical_crossentropy(labels, predictions, from_logits=from_logits)

    def evaluate(
        self, model: Any, images: Any, labels: Any, batch_size: int | None = None
    ) -> float:
        return ref.evaluate(model, images, labels, batch_size)

    # -- autodiff ----------------------------------------------------------------------------
    def loss_gradient(self, labels: Any, predictions: Any, from_logits: bool = False) -> Any:
        return ref.sparse_categorical_crossentropy_backward(
            labels, predictions, from_logits=from_logits
        )

    def model_gradients(self, model: Any, images: Any, labels: Any) -> list[Any]:
        return ref.loss_and_gradients(model, images, labels)[1]

    def gradient_affine(self, x: Any) -> Any:
        return np.full_like(x, 2.0)  # d sum(2x + 3) / dx, by hand

    def gradient_dense(self, x: Any, W: Any, b: Any) -> tuple[Any, Any]:
        return dense_sum_gradients(x, W, b)

    def gradient_scalar_graph(
        self, x: float, w: float, b: float, y_true: float
    ) -> tuple[float, float]:
        g = ScalarGraph(x, w, b, y_true)
        return g.grad_by_paths("w"), g.grad_by_paths("b")

    # -- training ----------------------------------------------------------------------------
    def training_step(
        self, model: Any, images: Any, labels: Any, learning_rate: float, optimizer: str = "manual"
    ) -> float:
        opt = ref.SGD(learning_rate) if optimizer == "sgd" else None
        return ref.one_training_step(model, images, labels, learning_rate, optimizer=opt)

    def update_weights(
        self, gradients: Sequence[Any], weights: Sequence[Any], learning_rate: float
    ) -> None:
        ref.update_weights(gradients, weights, learning_rate)

    def fit(
        self,
        model: Any,
        images: Any,
        labels: Any,
        epochs: int,
        batch_size: int,
        learning_rate: float,
    ) -> list[list[float]]:
        return ref.fit(
            model, images, labels, epochs, batch_size, learning_rate=learning_rate, print_fn=None
        )

    # -- optimizers --------------------------------------------------------------------------
    def momentum_step(
        self, w: Any, g: Any, velocity: Any, learning_rate: float, momentum: float, rule: str
    ) -> tuple[Any, Any]:
        if rule == "book":
            return ref.naive_momentum_update(w, g, velocity, learning_rate, momentum)
        # Through the reference's Keras SGD optimizer (its momentum and Nesterov branches), on
        # copies: the verb must leave w and velocity untouched.
        opt = ref.SGD(learning_rate, momentum=momentum, nesterov=rule == "nesterov")
        w = np.array(w, copy=True)
        if momentum:
            opt.velocities = [np.array(velocity, copy=True)]
        opt.apply_gradients([g], [w])
        return w, (opt.velocities[0] if opt.velocities else -learning_rate * g)

    def sgd_path(
        self,
        grad: Callable[[float], float],
        w0: float,
        learning_rate: float,
        steps: int,
        momentum: float = 0.0,
        nesterov: bool = False,
    ) -> list[float]:
        return ref.sgd_path(grad, w0, learning_rate, steps, momentum=momentum, nesterov=nesterov)

    def rmsprop_step(
        self,
        w: Any,
        g: Any,
        state: Any,
        learning_rate: float = 1e-3,
        rho: float = 0.9,
        epsilon: float = 1e-7,
    ) -> tuple[Any, Any]:
        # Through the reference's Keras RMSprop optimizer, on copies (inputs stay untouched).
        opt = ref.RMSprop(learning_rate, rho, epsilon)
        opt.rms = [np.array(state, copy=True)]
        w = np.array(w, copy=True)
        opt.apply_gradients([g], [w])
        return w, opt.rms[0]

    def glorot_uniform(self, fan_in: int, fan_out: int, seed: int) -> Any:
        limit = glorot_uniform_limit(fan_in, fan_out)
        return np.random.default_rng(seed).uniform(-limit, limit, (fan_in, fan_out))

    # -- MNIST -------------------------------------------------------------------------------
    def train_first_example(
        self, images: Any, labels: Any, epochs: int, batch_size: int, seed: int
    ) -> Any:
        model = FirstExampleModel(dtype=images.dtype, rng=np.random.default_rng(seed))
        ref.train_first_example(
            model,
            images,
            labels,
            epochs=epochs,
            batch_size=batch_size,
            rng=np.random.default_rng(seed + 1),
        )
        return model


ADAPTER: FullAdapter = NumpyAdapter()
