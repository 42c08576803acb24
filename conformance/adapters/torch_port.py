"""The ``torch-cpu`` and ``torch-cuda`` adapters: the dl_ch2 port.

Every verb reaches the port through dl_ch2's public functions where the port defines one,
so the suite grades the port, not torch. Where the chapter itself uses a plain operator
or NumPy function that the port does not wrap (``x + y``, ``np.maximum``,
``np.expand_dims``, slicing), the verb uses torch's equivalent and says so.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

import dl_ch2
from conformance.adapter import FullAdapter
from dl_ch2.naive_model import identity

ACTIVATIONS = {"relu": dl_ch2.relu, "softmax": dl_ch2.softmax, "identity": identity}
DTYPES = {"float32": torch.float32, "float64": torch.float64}
CHAPTER_MODEL = [(784, 512, "relu"), (512, 10, "softmax")]


class FirstExample:
    """The §2.1 model as ``train_first_example`` left it (it outputs logits)."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.module = module


class TorchAdapter:
    name = "dl_ch2 (torch)"
    version = dl_ch2.__version__
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

    def __init__(self, device: str) -> None:
        self.device_name = device
        self.devices: Sequence[str] = (device,)
        self.version = f"dl_ch2 {dl_ch2.__version__}, torch {torch.__version__}"

    @property
    def device(self) -> torch.device:
        # resolved lazily, so listing the adapter works without CUDA; using it does not
        return dl_ch2.resolve_device(self.device_name)

    # -- conversion (adapter glue) ---------------------------------------------------------
    def asarray(self, x: np.ndarray, dtype: str | None = None) -> torch.Tensor:
        a = np.asarray(x, dtype=dtype) if dtype else np.asarray(x)
        return torch.as_tensor(a, device=self.device)

    def to_numpy(self, x: Any) -> np.ndarray:
        if isinstance(x, torch.Tensor):
            return x.detach().cpu().numpy()
        return np.asarray(x)

    # -- §2.1 ------------------------------------------------------------------------------
    def preprocess(self, images: Any) -> Any:
        # the port's preprocess is the book's, on NumPy arrays (as MNIST arrives)
        return self.asarray(dl_ch2.preprocess(self.to_numpy(images)))

    # -- §2.3 ------------------------------------------------------------------------------
    def add(self, x: Any, y: Any) -> Any:
        return x + y  # the chapter's `x + y`; the port has no add of its own

    def relu(self, x: Any) -> Any:
        return dl_ch2.relu(x)

    def maximum(self, x: Any, y: Any) -> Any:
        return torch.maximum(x, y)  # the chapter's np.maximum; the port does not wrap it

    def stretch(self, y: Any, shape: tuple[int, ...]) -> Any:
        return dl_ch2.stretch(y, shape)

    def dot(self, x: Any, y: Any) -> Any:
        return dl_ch2.dot(x, y)

    def reshape(self, x: Any, shape: tuple[int, ...]) -> Any:
        return dl_ch2.reshape(x, shape)

    def transpose(self, x: Any) -> Any:
        return dl_ch2.transpose(x)

    def expand_dims(self, x: Any, axis: int) -> Any:
        return x.unsqueeze(axis)  # the chapter's np.expand_dims; the port does not wrap it

    def getitem(self, x: Any, index: Any) -> Any:
        return x[index]  # the chapter's slicing; the port does not wrap it

    def vector_add(self, a: Any, b: Any) -> Any:
        return dl_ch2.vector_add(a, b)

    def rotate(self, points: Any, theta: float) -> Any:
        return dl_ch2.rotate(points, theta)

    naive_relu = staticmethod(dl_ch2.naive_relu)
    naive_add = staticmethod(dl_ch2.naive_add)
    naive_add_matrix_and_vector = staticmethod(dl_ch2.naive_add_matrix_and_vector)
    naive_vector_dot = staticmethod(dl_ch2.naive_vector_dot)
    naive_matrix_vector_dot = staticmethod(dl_ch2.naive_matrix_vector_dot)
    naive_matrix_vector_dot_via_vector_dot = staticmethod(
        dl_ch2.naive_matrix_vector_dot_via_vector_dot
    )
    naive_matrix_dot = staticmethod(dl_ch2.naive_matrix_dot)

    # -- §2.5 model --------------------------------------------------------------------------
    def dense_model(
        self,
        layers: Sequence[tuple[int, int, str]],
        weights: Sequence[np.ndarray] | None,
        seed: int,
    ) -> Any:
        g = torch.Generator().manual_seed(seed)
        dtype = DTYPES[str(weights[0].dtype)] if weights is not None else torch.float64
        if [tuple(layer) for layer in layers] == CHAPTER_MODEL:
            model = dl_ch2.build_naive_model(device=self.device, dtype=dtype, generator=g)
        else:
            model = dl_ch2.NaiveSequential(
                [
                    dl_ch2.NaiveDense(
                        i, o, ACTIVATIONS[a], device=self.device, dtype=dtype, generator=g
                    )
                    for i, o, a in layers
                ]
            )
        if weights is not None:  # adapter glue: start from the suite's weights
            with torch.no_grad():
                for w, v in zip(model.weights, weights, strict=True):
                    w.copy_(torch.from_numpy(np.asarray(v)))
        return model

    def model_weights(self, model: Any) -> list[Any]:
        return list(model.weights)

    def predict(self, model: Any, x: Any) -> Any:
        if isinstance(model, FirstExample):
            return dl_ch2.predict(model.module, x)
        with torch.no_grad():
            return model(x)  # the book's model(images)

    def batches(
        self,
        images: Any,
        labels: Any,
        batch_size: int,
        shuffle: bool = False,
        seed: int | None = None,
    ) -> list[tuple[Any, Any]]:
        g = torch.Generator().manual_seed(seed) if seed is not None else None
        return list(dl_ch2.BatchGenerator(images, labels, batch_size, shuffle=shuffle, generator=g))

    def sparse_categorical_crossentropy(
        self, labels: Any, predictions: Any, from_logits: bool = False
    ) -> Any:
        return dl_ch2.sparse_categorical_crossentropy(labels, predictions, from_logits=from_logits)

    def evaluate(
        self, model: Any, images: Any, labels: Any, batch_size: int | None = None
    ) -> float:
        return dl_ch2.evaluate(model, images, labels, batch_size)

    # -- autodiff ----------------------------------------------------------------------------
    def loss_gradient(self, labels: Any, predictions: Any, from_logits: bool = False) -> Any:
        p = dl_ch2.variable(predictions)
        loss = dl_ch2.sparse_categorical_crossentropy(labels, p, from_logits=from_logits)
        with dl_ch2.GradientTape() as tape:
            average_loss = loss.mean()
        return tape.gradient(average_loss, p)

    def model_gradients(self, model: Any, images: Any, labels: Any) -> list[Any]:
        with dl_ch2.GradientTape() as tape:
            predictions = model(images)
            loss = dl_ch2.sparse_categorical_crossentropy(labels, predictions).mean()
        gradients = tape.gradient(loss, model.weights)
        return list(gradients)

    def gradient_affine(self, x: Any) -> Any:
        v = dl_ch2.variable(x)
        with dl_ch2.GradientTape() as tape:
            y = 2 * v + 3  # the book's tape example, plain operators
        return tape.gradient(y, v)

    def gradient_dense(self, x: Any, W: Any, b: Any) -> tuple[Any, Any]:
        Wv, bv = dl_ch2.variable(W), dl_ch2.variable(b)
        with dl_ch2.GradientTape() as tape:
            y = dl_ch2.dot(x, Wv) + bv  # the book's tf.matmul(x, W) + b
        gw, gb = tape.gradient(y, [Wv, bv])
        return gw, gb

    def gradient_scalar_graph(
        self, x: float, w: float, b: float, y_true: float
    ) -> tuple[float, float]:
        g = dl_ch2.ScalarGraph(x, w, b, y_true).grad_by_autograd()
        return g["w"], g["b"]

    # -- training ----------------------------------------------------------------------------
    def training_step(
        self, model: Any, images: Any, labels: Any, learning_rate: float, optimizer: str = "manual"
    ) -> float:
        opt = torch.optim.SGD(model.parameters(), lr=learning_rate) if optimizer == "sgd" else None
        return float(dl_ch2.one_training_step(model, images, labels, learning_rate, optimizer=opt))

    def update_weights(
        self, gradients: Sequence[Any], weights: Sequence[Any], learning_rate: float
    ) -> None:
        dl_ch2.update_weights(gradients, weights, learning_rate)

    def fit(
        self,
        model: Any,
        images: Any,
        labels: Any,
        epochs: int,
        batch_size: int,
        learning_rate: float,
    ) -> list[list[float]]:
        history = dl_ch2.fit(
            model, images, labels, epochs=epochs, batch_size=batch_size, learning_rate=learning_rate
        )
        return [list(epoch) for epoch in history.batch_losses]

    # -- optimizers --------------------------------------------------------------------------
    def momentum_step(
        self, w: Any, g: Any, velocity: Any, learning_rate: float, momentum: float, rule: str
    ) -> tuple[Any, Any]:
        if rule == "book":
            return dl_ch2.naive_momentum_update(w, g, velocity, learning_rate, momentum)
        if rule not in ("keras", "nesterov"):
            raise ValueError(f"rule must be 'book', 'keras' or 'nesterov', got {rule!r}")
        return dl_ch2.keras_sgd_update(
            w, g, velocity, learning_rate, momentum, nesterov=rule == "nesterov"
        )

    def sgd_path(
        self,
        grad: Callable[[float], float],
        w0: float,
        learning_rate: float,
        steps: int,
        momentum: float = 0.0,
        nesterov: bool = False,
    ) -> list[float]:
        return dl_ch2.sgd_path(grad, w0, learning_rate, steps, momentum=momentum, nesterov=nesterov)

    def rmsprop_step(
        self,
        w: Any,
        g: Any,
        state: Any,
        learning_rate: float = 1e-3,
        rho: float = 0.9,
        epsilon: float = 1e-7,
    ) -> tuple[Any, Any]:
        p = torch.nn.Parameter(w.detach().clone())
        opt = dl_ch2.keras_rmsprop([p], lr=learning_rate, alpha=rho, eps=epsilon)
        opt.state[p]["step"] = torch.tensor(0.0)
        opt.state[p]["square_avg"] = state.clone()
        p.grad = g.clone()
        opt.step()
        return p.detach(), opt.state[p]["square_avg"]

    def glorot_uniform(self, fan_in: int, fan_out: int, seed: int) -> Any:
        w = torch.empty(fan_out, fan_in, dtype=torch.float64, device=self.device)
        dl_ch2.glorot_uniform_(w, torch.Generator().manual_seed(seed))
        return w.T

    # -- MNIST -------------------------------------------------------------------------------
    def train_first_example(
        self, images: Any, labels: Any, epochs: int, batch_size: int, seed: int
    ) -> Any:
        model = dl_ch2.build_first_example_model(
            device=self.device, dtype=images.dtype, generator=torch.Generator().manual_seed(seed)
        )
        dl_ch2.train_first_example(
            model,
            images,
            labels,
            epochs=epochs,
            batch_size=batch_size,
            generator=torch.Generator().manual_seed(seed + 1),
        )
        return FirstExample(model)


CPU = TorchAdapter("cpu")
CUDA = TorchAdapter("cuda")
ADAPTER: FullAdapter = CPU
