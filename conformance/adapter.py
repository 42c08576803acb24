"""The adapter contract: how the conformance suite talks to an implementation.

An adapter is one Python module (or file) exposing ``ADAPTER``, an object with the
attributes and verbs of ``Adapter`` below. Arrays cross the boundary as NumPy arrays:
every verb takes NumPy inputs and returns something ``to_numpy`` understands (or NumPy).
Models are opaque handles the adapter creates and the suite passes back.

Capabilities say which optional parts the implementation claims. Specs that need an
unclaimed capability are reported "not claimed", never failed.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

__all__ = [
    "CAPABILITIES",
    "CORE_VERBS",
    "Adapter",
    "AdapterLoadError",
    "load_adapter",
    "validate_metadata",
]

#: Optional capabilities an adapter may claim, and what each one covers.
CAPABILITIES: dict[str, str] = {
    "naive_ops": "the book's loop implementations (naive_relu, naive_add, naive_*_dot)",
    "autodiff": "gradients of a loss w.r.t. weights (loss_gradient, model_gradients)",
    "training": "one training step, the SGD optimizer equivalence and fit-style batching",
    "momentum": "the book's momentum rule and Keras SGD momentum / Nesterov",
    "rmsprop": "Keras 2.6 RMSprop",
    "keras_init": "Keras' glorot_uniform initialisation for the first example",
    "random_init": "NaiveDense's own random initialisation (U[0, 0.1))",
    "mnist_training": "training the first example on MNIST (slow; needs the data)",
}

#: Verbs every adapter must provide (the rest belong to capabilities).
CORE_VERBS = (
    "to_numpy",
    "asarray",
    "add",
    "relu",
    "maximum",
    "dot",
    "reshape",
    "transpose",
    "expand_dims",
    "getitem",
    "dense_model",
    "model_weights",
    "predict",
    "batches",
    "sparse_categorical_crossentropy",
    "evaluate",
)


@runtime_checkable
class Adapter(Protocol):
    """What an implementation provides to be graded (see conformance/README.md)."""

    name: str
    version: str
    devices: Sequence[str]
    dtypes: Sequence[str]  # of "float32", "float64"
    capabilities: frozenset[str]

    # -- conversion ------------------------------------------------------------------------
    def asarray(self, x: np.ndarray, dtype: str | None = None) -> Any: ...
    def to_numpy(self, x: Any) -> np.ndarray: ...

    # -- §2.3 tensor operations (inputs and outputs are the implementation's arrays) --------
    def add(self, x: Any, y: Any) -> Any: ...
    def relu(self, x: Any) -> Any: ...
    def maximum(self, x: Any, y: Any) -> Any: ...
    def dot(self, x: Any, y: Any) -> Any: ...
    def reshape(self, x: Any, shape: tuple[int, ...]) -> Any: ...
    def transpose(self, x: Any) -> Any: ...
    def expand_dims(self, x: Any, axis: int) -> Any: ...
    def getitem(self, x: Any, index: Any) -> Any: ...

    # -- §2.5 model ------------------------------------------------------------------------
    def dense_model(
        self,
        layers: Sequence[tuple[int, int, str]],
        weights: Sequence[np.ndarray] | None,
        seed: int,
    ) -> Any:
        """A NaiveSequential of NaiveDense(input, output, activation) layers.

        ``activation`` is "relu", "softmax" or "identity". With ``weights`` (NumPy, in
        ``[W, b, W, b, ...]`` order, W of shape (input, output)) the model starts from them;
        without, it draws its own initial weights from ``seed``.
        """

    def model_weights(self, model: Any) -> list[Any]: ...
    def predict(self, model: Any, x: Any) -> Any: ...
    def batches(
        self,
        images: Any,
        labels: Any,
        batch_size: int,
        shuffle: bool = False,
        seed: int | None = None,
    ) -> list[tuple[Any, Any]]:
        """All batches of one pass of BatchGenerator(images, labels, batch_size)."""

    def sparse_categorical_crossentropy(
        self, labels: Any, predictions: Any, from_logits: bool = False
    ) -> Any:
        """Per-sample loss, shape (batch,), with the TF 2.6 eager semantics."""

    def evaluate(self, model: Any, images: Any, labels: Any) -> float: ...


class AdapterLoadError(RuntimeError):
    """The adapter named on the command line could not be loaded."""


BUILTIN = {
    "numpy": "conformance.adapters.numpy_ref",
    "torch-cpu": "conformance.adapters.torch_port:CPU",
    "torch-cuda": "conformance.adapters.torch_port:CUDA",
}


def load_adapter(spec: str) -> Any:
    """Load an adapter from a built-in name, ``module[:attr]`` or ``path/to/adapter.py[:attr]``.

    The attribute defaults to ``ADAPTER``.
    """
    spec = BUILTIN.get(spec, spec)
    target, _, attr = spec.partition(":")
    if spec.endswith(".py") or ".py:" in spec:
        path = Path(target).resolve()
        if not path.exists():
            raise AdapterLoadError(f"adapter file {path} does not exist")
        mod_name = f"conformance_adapter_{abs(hash(str(path)))}"
        file_spec = importlib.util.spec_from_file_location(mod_name, path)
        if file_spec is None or file_spec.loader is None:
            raise AdapterLoadError(f"cannot import {path}")
        module = importlib.util.module_from_spec(file_spec)
        sys.modules[mod_name] = module
        try:
            file_spec.loader.exec_module(module)
        except Exception as exc:
            raise AdapterLoadError(f"importing {path} raised {type(exc).__name__}: {exc}") from exc
    else:
        try:
            module = importlib.import_module(target)
        except Exception as exc:
            raise AdapterLoadError(
                f"importing {target!r} raised {type(exc).__name__}: {exc}"
            ) from exc
    obj = getattr(module, attr or "ADAPTER", None)
    if obj is None:
        raise AdapterLoadError(f"{target} has no attribute {attr or 'ADAPTER'}")
    validate_metadata(obj, target)
    return obj


#: The dtypes the suite's tolerance table knows.
KNOWN_DTYPES = ("float32", "float64")


def _bad(target: str, attr: str, want: str, got: Any) -> AdapterLoadError:
    shown = repr(got)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    return AdapterLoadError(
        f"adapter {target}: attribute {attr!r} must be {want}, got {shown} ({type(got).__name__})"
    )


def _str_items(target: str, attr: str, value: Any, want: str) -> list[str]:
    """``value`` as a non-empty list of str; a bare str (read letter by letter) is refused."""
    if isinstance(value, (str, bytes)) or not isinstance(value, (Sequence, set, frozenset)):
        raise _bad(target, attr, want, value)
    items = list(value)
    if not items or not all(isinstance(v, str) for v in items):
        raise _bad(target, attr, want, value)
    return items


def validate_metadata(obj: Any, target: str) -> None:
    """Check an adapter's descriptive attributes; raise AdapterLoadError naming the bad one.

    ``name`` and ``version`` are non-empty str; ``devices`` a non-empty sequence of str;
    ``dtypes`` a non-empty sequence of "float32"/"float64"; ``capabilities`` a set (or
    sequence) of known capability names, possibly empty, never a bare str; the optional
    ``library_versions`` a dict keyed by library name (str).
    """
    missing = [
        a for a in ("name", "version", "devices", "dtypes", "capabilities") if not hasattr(obj, a)
    ]
    if missing:
        raise AdapterLoadError(f"adapter {target} lacks the attributes {missing}")
    for attr in ("name", "version"):
        value = getattr(obj, attr)
        if not isinstance(value, str) or not value.strip():
            raise _bad(target, attr, "a non-empty str", value)
    _str_items(target, "devices", obj.devices, "a non-empty sequence of device names (str)")
    dtypes = _str_items(
        target, "dtypes", obj.dtypes, f"a non-empty sequence of {' or '.join(KNOWN_DTYPES)}"
    )
    unknown_dtypes = sorted(set(dtypes) - set(KNOWN_DTYPES))
    if unknown_dtypes:
        raise AdapterLoadError(
            f"adapter {target}: attribute 'dtypes' names unknown dtypes {unknown_dtypes}; "
            f"known: {list(KNOWN_DTYPES)}"
        )
    caps = obj.capabilities
    want_caps = "a set of capability names (str), e.g. frozenset({'training'})"
    if isinstance(caps, (str, bytes)) or not isinstance(caps, (Sequence, set, frozenset)):
        raise _bad(target, "capabilities", want_caps, caps)
    if not all(isinstance(c, str) for c in caps):
        raise _bad(target, "capabilities", want_caps, caps)
    unknown = set(caps) - set(CAPABILITIES)
    if unknown:
        raise AdapterLoadError(
            f"adapter {target}: attribute 'capabilities' names unknown capabilities "
            f"{sorted(unknown)}; known: {sorted(CAPABILITIES)}"
        )
    libs = getattr(obj, "library_versions", None)
    if libs is not None and (
        not isinstance(libs, dict) or not all(isinstance(k, str) for k in libs)
    ):
        raise _bad(target, "library_versions", "a dict keyed by library name (or absent)", libs)
