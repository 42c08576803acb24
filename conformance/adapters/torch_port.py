"""The ``torch-cpu`` and ``torch-cuda`` adapters: the dl_ch2 port."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

import dl_ch2

ACTIVATIONS = {"relu": dl_ch2.relu, "softmax": dl_ch2.softmax, "identity": lambda x: x}
DTYPES = {"float32": torch.float32, "float64": torch.float64}


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

    def asarray(self, x: np.ndarray, dtype: str | None = None) -> torch.Tensor:
        t = torch.as_tensor(np.asarray(x, dtype=dtype) if dtype else np.asarray(x))
        return t.to(self.device)

    def to_numpy(self, x: Any) -> np.ndarray:
        if isinstance(x, torch.Tensor):
            return x.detach().cpu().numpy()
        return np.asarray(x)

    def add(self, x: Any, y: Any) -> Any:
        return x + y

    def relu(self, x: Any) -> Any:
        return dl_ch2.relu(x)

    def maximum(self, x: Any, y: Any) -> Any:
        return torch.maximum(x, y)

    def dot(self, x: Any, y: Any) -> Any:
        return dl_ch2.dot(x, y)

    def reshape(self, x: Any, shape: tuple[int, ...]) -> Any:
        return dl_ch2.reshape(x, shape)

    def transpose(self, x: Any) -> Any:
        return dl_ch2.transpose(x)

    def expand_dims(self, x: Any, axis: int) -> Any:
        return x.unsqueeze(axis)

    def getitem(self, x: Any, index: Any) -> Any:
        return x[index]

    naive_relu = staticmethod(dl_ch2.naive_relu)
    naive_add = staticmethod(dl_ch2.naive_add)
    naive_add_matrix_and_vector = staticmethod(dl_ch2.naive_add_matrix_and_vector)
    naive_vector_dot = staticmethod(dl_ch2.naive_vector_dot)
    naive_matrix_vector_dot = staticmethod(dl_ch2.naive_matrix_vector_dot)
    naive_matrix_dot = staticmethod(dl_ch2.naive_matrix_dot)

    def dense_model(
        self,
        layers: Sequence[tuple[int, int, str]],
        weights: Sequence[np.ndarray] | None,
        seed: int,
    ) -> Any:
        g = torch.Generator().manual_seed(seed)
        dtype = DTYPES[str(weights[0].dtype)] if weights is not None else torch.float64
        model = dl_ch2.NaiveSequential(
            [
                dl_ch2.NaiveDense(
                    i, o, ACTIVATIONS[a], device=self.device, dtype=dtype, generator=g
                )
                for i, o, a in layers
            ]
        )
        if weights is not None:
            with torch.no_grad():
                for w, v in zip(model.weights, weights, strict=True):
                    w.copy_(torch.from_numpy(np.asarray(v)))
        return model

    def model_weights(self, model: Any) -> list[Any]:
        return list(model.weights)

    def predict(self, model: Any, x: Any) -> Any:
        with torch.no_grad():
            return model(x)

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

    def evaluate(self, model: Any, images: Any, labels: Any) -> float:
        return dl_ch2.evaluate(model, images, labels)

    def loss_gradient(self, labels: Any, predictions: Any, from_logits: bool = False) -> Any:
        p = predictions.detach().clone().requires_grad_(True)
        loss = dl_ch2.sparse_categorical_crossentropy(labels, p, from_logits=from_logits).mean()
        (g,) = torch.autograd.grad(loss, p)
        return g

    def model_gradients(self, model: Any, images: Any, labels: Any) -> list[Any]:
        loss = dl_ch2.sparse_categorical_crossentropy(labels, model(images)).mean()
        return list(torch.autograd.grad(loss, model.weights))

    def gradient_affine(self, x: Any) -> Any:
        v = dl_ch2.variable(x)
        with dl_ch2.GradientTape() as tape:
            y = 2 * v + 3
        return tape.gradient(y, v)

    def gradient_dense(self, x: Any, W: Any, b: Any) -> tuple[Any, Any]:
        Wv, bv = dl_ch2.variable(W), dl_ch2.variable(b)
        with dl_ch2.GradientTape() as tape:
            y = x @ Wv + bv
        gw, gb = tape.gradient(y, [Wv, bv])
        return gw, gb

    def gradient_scalar_graph(
        self, x: float, w: float, b: float, y_true: float
    ) -> tuple[float, float]:
        g = dl_ch2.ScalarGraph(x, w, b, y_true).grad_by_autograd()
        return g["w"], g["b"]

    def training_step(
        self, model: Any, images: Any, labels: Any, learning_rate: float, optimizer: str = "manual"
    ) -> float:
        opt = torch.optim.SGD(model.parameters(), lr=learning_rate) if optimizer == "sgd" else None
        return float(dl_ch2.one_training_step(model, images, labels, learning_rate, optimizer=opt))

    def update_weights(
        self, gradients: Sequence[Any], weights: Sequence[Any], learning_rate: float
    ) -> None:
        dl_ch2.update_weights(gradients, weights, learning_rate)

    def momentum_step(
        self, w: Any, g: Any, velocity: Any, learning_rate: float, momentum: float, rule: str
    ) -> tuple[Any, Any]:
        if rule == "book":
            return dl_ch2.naive_momentum_update(w, g, velocity, learning_rate, momentum)
        if momentum == 0:  # plain SGD keeps no buffer; Keras' velocity is then -lr * g
            return w - learning_rate * g, -learning_rate * g
        # through torch.optim.SGD itself: Keras velocity == -lr * torch's momentum buffer
        p = torch.nn.Parameter(w.detach().clone())
        opt = torch.optim.SGD([p], lr=learning_rate, momentum=momentum, nesterov=rule == "nesterov")
        if bool((velocity != 0).any()):
            opt.state[p]["momentum_buffer"] = -velocity / learning_rate
        p.grad = g.clone()
        opt.step()
        return p.detach(), -learning_rate * opt.state[p]["momentum_buffer"]

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
        w = torch.empty(fan_out, fan_in, dtype=torch.float64)
        dl_ch2.glorot_uniform_(w, torch.Generator().manual_seed(seed))
        return w.T

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
        return _Softmaxed(model)


class _Softmaxed(torch.nn.Module):
    """Wrap the logits model so ``predict`` returns probabilities, as the book's does."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.inner(x), dim=-1)


CPU = TorchAdapter("cpu")
CUDA = TorchAdapter("cuda")
ADAPTER = CPU
