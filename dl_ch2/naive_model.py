"""§2.5.1 Reimplementing our first example from scratch: NaiveDense and NaiveSequential.

Both are ``torch.nn.Module``s, so ``.to()``, ``.parameters()`` and ``state_dict()`` work,
and both keep the book's ``weights`` property (the list ``[W, b, W, b, ...]``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import torch
from torch import nn

from dl_ch2._checks import (
    DeviceLike,
    require_float_dtype,
    require_positive_int,
    resolve_device,
    shape_str,
)

__all__ = ["NaiveDense", "NaiveSequential", "build_naive_model", "relu", "softmax"]

Activation = Callable[[torch.Tensor], torch.Tensor]

#: The book draws W with ``tf.random.uniform(w_shape, minval=0, maxval=1e-1)``.
W_INIT_MINVAL = 0.0
W_INIT_MAXVAL = 1e-1


def relu(x: torch.Tensor) -> torch.Tensor:
    """§2.3.1 / §2.5.1: ``max(x, 0)`` element-wise (the book's ``tf.nn.relu``)."""
    return torch.relu(x)


def softmax(x: torch.Tensor) -> torch.Tensor:
    """§2.5.1: softmax over the last axis (the book's ``tf.nn.softmax``)."""
    return torch.softmax(x, dim=-1)


def identity(x: torch.Tensor) -> torch.Tensor:
    """No activation: the layer returns ``inputs @ W + b``."""
    return x


def uniform_like_tf(
    shape: tuple[int, ...],
    minval: float,
    maxval: float,
    *,
    dtype: torch.dtype,
    device: torch.device,
    generator: torch.Generator | None,
) -> torch.Tensor:
    """Draw U[minval, maxval) as ``tf.random.uniform``: ``minval + (max - min) * U[0, 1)``.

    Values are drawn on the generator's device (CPU unless a CUDA generator is given) and then
    moved, so one seed gives the same weights on every device. Rounding can land a draw on
    ``maxval`` itself; such draws are moved to the largest value below it to keep the interval
    half-open.
    """
    gen_device = generator.device if generator is not None else torch.device("cpu")
    u = torch.rand(shape, generator=generator, dtype=dtype, device=gen_device)
    w = u * (maxval - minval) + minval
    top = torch.nextafter(
        torch.tensor(maxval, dtype=dtype, device=gen_device),
        torch.tensor(minval, dtype=dtype, device=gen_device),
    )
    w = torch.minimum(w, top)
    return w.to(device)


class NaiveDense(nn.Module):
    """§2.5.1: a dense layer ``activation(inputs @ W + b)``.

    W has shape ``(input_size, output_size)`` and is drawn from U[0, 0.1) like the book's
    ``tf.random.uniform(minval=0, maxval=1e-1)``; b is zeros. Pass ``generator`` for a
    seeded draw.

    ``device`` and ``dtype`` default as ``nn.Linear``'s do: the current default device
    (``with torch.device(...)``, ``torch.set_default_device``; the meta device included,
    where nothing is drawn) and ``torch.get_default_dtype()``. ``reset_parameters`` draws
    again (after ``to_empty``, say).

    Layout: W is ``(in, out)``, the book's ``inputs @ W``; ``nn.Linear.weight`` is
    ``(out, in)``. :meth:`from_linear`, :meth:`to_linear`, :meth:`linear_state_dict` and
    :meth:`dense_state_dict` convert, transposing.
    """

    W: nn.Parameter
    b: nn.Parameter

    def __init__(
        self,
        input_size: int,
        output_size: int,
        activation: Activation,
        *,
        device: DeviceLike = None,
        dtype: torch.dtype | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        require_positive_int("input_size", input_size)
        require_positive_int("output_size", output_size)
        if not callable(activation):
            raise TypeError(f"activation must be callable, got {type(activation).__name__}")
        dtype = torch.get_default_dtype() if dtype is None else require_float_dtype("dtype", dtype)
        dev = torch.get_default_device() if device is None else resolve_device(device)
        self.input_size = input_size
        self.output_size = output_size
        self.activation = activation
        self.W = nn.Parameter(torch.empty(input_size, output_size, dtype=dtype, device=dev))
        self.b = nn.Parameter(torch.empty(output_size, dtype=dtype, device=dev))
        self.reset_parameters(generator)

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Draw W from U[0, 0.1) (with ``generator``) and zero b, in place; no-op on meta."""
        if self.W.is_meta:
            return
        w = uniform_like_tf(
            tuple(self.W.shape),
            W_INIT_MINVAL,
            W_INIT_MAXVAL,
            dtype=self.W.dtype,
            device=self.W.device,
            generator=generator,
        )
        with torch.no_grad():
            self.W.copy_(w)
            self.b.zero_()

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        if not isinstance(inputs, torch.Tensor):
            raise TypeError(f"inputs must be a torch.Tensor, got {type(inputs).__name__}")
        if inputs.ndim < 1 or inputs.shape[-1] != self.input_size:
            raise ValueError(
                f"inputs of shape {shape_str(inputs.shape)} do not fit a NaiveDense with "
                f"input_size={self.input_size} (W {shape_str(self.W.shape)}): the last axis "
                f"must be {self.input_size}"
            )
        return self.activation(inputs @ self.W + self.b)

    @property
    def weights(self) -> list[torch.Tensor]:
        """The book's ``[W, b]``: the parameters themselves, not copies."""
        return [self.W, self.b]

    @classmethod
    def from_linear(cls, linear: nn.Linear, activation: Activation = identity) -> NaiveDense:
        """A NaiveDense computing ``activation(linear(x))``: W = ``linear.weight.T``.

        Same device and dtype; a Linear without bias gives b = 0. The values are copied.
        """
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"linear must be a torch.nn.Linear, got {type(linear).__name__}")
        w = linear.weight.detach()
        bias = torch.zeros_like(w[:, 0]) if linear.bias is None else linear.bias.detach()
        layer = cls(w.shape[1], w.shape[0], activation, device="meta", dtype=w.dtype)
        layer.to_empty(device=w.device)
        layer.load_state_dict(cls.dense_state_dict({"weight": w, "bias": bias}))
        return layer

    def to_linear(self) -> nn.Linear:
        """An ``nn.Linear`` computing ``inputs @ W + b`` (without the activation)."""
        linear = nn.Linear(
            self.input_size, self.output_size, device=self.W.device, dtype=self.W.dtype
        )
        linear.load_state_dict(self.linear_state_dict(self.state_dict()))
        return linear

    @staticmethod
    def linear_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """A NaiveDense state dict (``W`` (in, out), ``b``) as nn.Linear's (``weight``
        (out, in), ``bias``): renaming the keys alone would load a square W transposed."""
        _require_keys(state, ("W", "b"), "a NaiveDense")
        return {"weight": state["W"].detach().t().contiguous(), "bias": state["b"].detach()}

    @staticmethod
    def dense_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """An nn.Linear state dict (``weight``, ``bias``) as NaiveDense's (``W``, ``b``)."""
        _require_keys(state, ("weight", "bias"), "an nn.Linear")
        return {"W": state["weight"].detach().t().contiguous(), "b": state["bias"].detach()}

    def extra_repr(self) -> str:
        name = getattr(self.activation, "__name__", type(self.activation).__name__)
        return f"input_size={self.input_size}, output_size={self.output_size}, activation={name}"


def _require_keys(state: Mapping[str, torch.Tensor], keys: tuple[str, str], what: str) -> None:
    if not isinstance(state, Mapping) or sorted(state) != sorted(keys):
        got = sorted(state) if isinstance(state, Mapping) else type(state).__name__
        raise ValueError(
            f"state must be {what} state dict with keys {keys[0]!r} and {keys[1]!r}, got {got}"
        )


class NaiveSequential(nn.Module):
    """§2.5.1: calls its layers in order; ``weights`` concatenates the layers' weights."""

    def __init__(self, layers: Iterable[nn.Module]) -> None:
        super().__init__()
        layer_list = list(layers)
        if not layer_list:
            raise ValueError("layers is empty: a NaiveSequential needs at least one layer")
        for i, layer in enumerate(layer_list):
            if not isinstance(layer, nn.Module):
                raise TypeError(
                    f"layers[{i}] must be a torch.nn.Module (e.g. NaiveDense), "
                    f"got {type(layer).__name__}"
                )
        self.layers = nn.ModuleList(layer_list)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        x = inputs
        for layer in self.layers:
            x = layer(x)
        return x

    @property
    def weights(self) -> list[torch.Tensor]:
        weights: list[torch.Tensor] = []
        for layer in self.layers:
            layer_weights = getattr(layer, "weights", None)
            weights += (
                list(layer_weights) if layer_weights is not None else list(layer.parameters())
            )
        return weights


def build_naive_model(
    *,
    device: DeviceLike = None,
    dtype: torch.dtype | None = None,
    generator: torch.Generator | None = None,
) -> NaiveSequential:
    """§2.5.1: the chapter's from-scratch model, 784 -> 512 (relu) -> 10 (softmax).

    ``device`` and ``dtype`` default as :class:`NaiveDense`'s (PyTorch's defaults).
    """
    return NaiveSequential(
        [
            NaiveDense(28 * 28, 512, relu, device=device, dtype=dtype, generator=generator),
            NaiveDense(512, 10, softmax, device=device, dtype=dtype, generator=generator),
        ]
    )
