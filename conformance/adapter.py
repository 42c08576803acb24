"""The adapter contract: how the conformance suite talks to an implementation.

An adapter is one Python module (or file) exposing ``ADAPTER``, an object with the
attributes of ``AdapterInfo`` and the verbs of ``CoreVerbs`` plus those of each capability
it claims (one ``Protocol`` per capability below, so a type checker can check an adapter:
``ADAPTER: FullAdapter = MyAdapter()``). Arrays cross the boundary as NumPy arrays through
``asarray``; every other verb takes and returns the implementation's own arrays, which the
suite reads back with ``to_numpy``. Models are opaque handles the adapter creates and the
suite passes back.

Capabilities say which optional parts the implementation claims. Specs that need an
unclaimed capability are reported "not claimed", never failed.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

__all__ = [
    "CAPABILITIES",
    "CAPABILITY_PROTOCOLS",
    "CHAPTER_CAPABILITIES",
    "OPT_IN_CAPABILITIES",
    "VERBS",
    "Adapter",
    "AdapterInfo",
    "AdapterLoadError",
    "AutodiffVerbs",
    "CoreVerbs",
    "FullAdapter",
    "KerasInitVerbs",
    "MnistTrainingVerbs",
    "MomentumVerbs",
    "NaiveOpsVerbs",
    "RMSpropVerbs",
    "TrainingVerbs",
    "load_adapter",
    "validate_metadata",
]

#: Optional capabilities an adapter may claim, and what each one covers.
CAPABILITIES: dict[str, str] = {
    "naive_ops": "the book's loop implementations (naive_relu, naive_add, naive_*_dot)",
    "autodiff": "gradients of a loss w.r.t. weights (loss_gradient, model_gradients)",
    "training": "one training step, update_weights, the SGD optimizer equivalence and fit",
    "momentum": "the book's momentum rule, Keras SGD momentum / Nesterov, SGD on a 1-D curve",
    "rmsprop": "Keras 2.6 RMSprop",
    "keras_init": "Keras' glorot_uniform initialisation for the first example",
    "random_init": "NaiveDense's own random initialisation (U[0, 0.1))",
    "mnist_training": "training the first example on MNIST (slow; needs the data)",
    "input_checks": (
        "the errors a library adds to the chapter's code: bad arguments refused before any "
        "work (a learning rate that is not a positive finite number, bool or float labels "
        "(the loss's too), labels beyond the model's width before any weight moves, "
        "update_weights given unequal numbers of gradients and weights, evaluate's batch_size 0, "
        "preprocess of images not shaped (N, 28, 28)), a NaN prediction in evaluate, a "
        "non-finite loss in fit, and fit's divergence rule (README)"
    ),
    "single_sample": "predict of one sample given as a vector (input,) gives its (classes,) row",
    "dtype_preservation": (
        "float32 operands stay float32 where the chapter's code would promote them: the naive "
        "loops' output buffers and accumulators, and rotate's matrix, follow the operands' dtype"
    ),
}

#: Capabilities the chapter does not ask a student to build (a library's extras, and the slow
#: MNIST training): an assignment covers them only when its rubric names them.
OPT_IN_CAPABILITIES: frozenset[str] = frozenset(
    {"mnist_training", "input_checks", "single_sample", "dtype_preservation"}
)

#: What a course assignment covers by default: the chapter's own capabilities.
CHAPTER_CAPABILITIES: tuple[str, ...] = tuple(
    c for c in CAPABILITIES if c not in OPT_IN_CAPABILITIES
)

Array = Any
"""The implementation's own array type (a torch.Tensor, a jax.Array, a NumPy array, ...)."""

Model = Any
"""An opaque model handle made by ``dense_model`` or ``train_first_example``."""


class AdapterInfo(Protocol):
    """What the report header shows and the plugin reads before grading."""

    name: str
    version: str
    devices: Sequence[str]
    dtypes: Sequence[str]  # of "float32", "float64"
    capabilities: frozenset[str]


class CoreVerbs(Protocol):
    """Verbs every adapter provides (§2.1-§2.5 without the optional parts)."""

    # -- conversion ------------------------------------------------------------------------
    def asarray(self, x: np.ndarray, dtype: str | None = None) -> Array:
        """NumPy -> the implementation's array, of ``dtype`` when given."""

    def to_numpy(self, x: Any) -> np.ndarray:
        """The implementation's array (or number) -> NumPy."""

    # -- §2.1 ------------------------------------------------------------------------------
    def preprocess(self, images: Array) -> Array:
        """uint8 (N, 28, 28) -> float32 (N, 784) in [0, 1]: ``reshape`` then ``/ 255``."""

    # -- §2.3 tensor operations ------------------------------------------------------------
    def add(self, x: Array, y: Array) -> Array:
        """Element-wise ``x + y`` with broadcasting."""

    def relu(self, x: Array) -> Array:
        """§2.3.1 element-wise ``max(x, 0)``; x itself is left unchanged."""

    def maximum(self, x: Array, y: Array) -> Array:
        """Element-wise maximum with broadcasting (``np.maximum``)."""

    def stretch(self, y: Array, shape: tuple[int, ...]) -> Array:
        """§2.3.2 broadcasting made explicit: y repeated along new leading axes to ``shape``."""

    def dot(self, x: Array, y: Array) -> Array:
        """``np.dot``: contract x's last axis with y's only / second-to-last axis."""

    def reshape(self, x: Array, shape: tuple[int, ...]) -> Array:
        """§2.3.4 the same coefficients in row-major order, in ``shape`` (one -1 inferred)."""

    def transpose(self, x: Array) -> Array:
        """The transpose of a matrix."""

    def expand_dims(self, x: Array, axis: int) -> Array:
        """``np.expand_dims``: a new axis of size 1 at ``axis`` (negative counts from the end)."""

    def getitem(self, x: Array, index: Any) -> Array:
        """``x[index]``: slices, integers and integer arrays."""

    def vector_add(self, a: Array, b: Array) -> Array:
        """§2.3.5: the sum of two points of the same shape (chaining their arrows)."""

    def rotate(self, points: Array, theta: float) -> Array:
        """§2.3.5: row vectors (..., 2) rotated counter-clockwise by ``theta`` radians."""

    # -- §2.5 model --------------------------------------------------------------------------
    def dense_model(
        self,
        layers: Sequence[tuple[int, int, str]],
        weights: Sequence[np.ndarray] | None,
        seed: int,
    ) -> Model:
        """A NaiveSequential of NaiveDense(input, output, activation) layers.

        ``activation`` is "relu", "softmax" or "identity". With ``weights`` (NumPy, in
        ``[W, b, W, b, ...]`` order, W of shape (input, output)) the model starts from them;
        without, it draws its own initial weights from ``seed``.
        """

    def model_weights(self, model: Model) -> list[Array]:
        """The model's ``[W, b, W, b, ...]`` (the weights themselves, not copies)."""

    def predict(self, model: Model, x: Array) -> Array:
        """The forward pass: probabilities for a softmax model."""

    def batches(
        self,
        images: Array,
        labels: Array,
        batch_size: int,
        shuffle: bool = False,
        seed: int | None = None,
    ) -> list[tuple[Array, Array]]:
        """All batches of one pass of BatchGenerator(images, labels, batch_size)."""

    def sparse_categorical_crossentropy(
        self, labels: Array, predictions: Array, from_logits: bool = False
    ) -> Array:
        """Per-sample loss, shape (batch,), with the TF 2.6 eager semantics."""

    def evaluate(
        self, model: Model, images: Array, labels: Array, batch_size: int | None = None
    ) -> float:
        """Accuracy (fraction of argmax predictions equal to the labels), in batches."""


class NaiveOpsVerbs(Protocol):
    """Capability ``naive_ops``: the book's loop functions of §2.3; bad shapes raise."""

    def naive_relu(self, x: Array) -> Array:
        """§2.3.1 relu of a rank-2 x with two loops; other ranks raise; x is not changed."""

    def naive_add(self, x: Array, y: Array) -> Array:
        """§2.3.1 x + y for rank-2 x and y of the same shape, with loops; else raise."""

    def naive_add_matrix_and_vector(self, x: Array, y: Array) -> Array:
        """§2.3.2 y (columns,) added to every row of a rank-2 x, with loops; else raise."""

    def naive_vector_dot(self, x: Array, y: Array) -> Array:
        """§2.3.3 the dot product of two vectors of equal length, with a loop; else raise."""

    def naive_matrix_vector_dot(self, x: Array, y: Array) -> Array:
        """§2.3.3 x (rows, n) . y (n,) -> (rows,), with loops; else raise."""

    def naive_matrix_vector_dot_via_vector_dot(self, x: Array, y: Array) -> Array:
        """§2.3.3 the same, each row through ``naive_vector_dot``; else raise."""

    def naive_matrix_dot(self, x: Array, y: Array) -> Array:
        """§2.3.3 x (m, n) . y (n, p) -> (m, p), each entry a ``naive_vector_dot``; else raise."""


class AutodiffVerbs(Protocol):
    """Capability ``autodiff``: gradients (§2.4.4, §2.5.2)."""

    def loss_gradient(self, labels: Array, predictions: Array, from_logits: bool = False) -> Array:
        """d(mean loss) / d(predictions)."""

    def model_gradients(self, model: Model, images: Array, labels: Array) -> list[Array]:
        """d(mean loss) / d(weights), in ``model_weights`` order."""

    def gradient_affine(self, x: Array) -> Array:
        """The GradientTape example: d sum(2x + 3) / dx."""

    def gradient_dense(self, x: Array, W: Array, b: Array) -> tuple[Array, Array]:
        """d sum(x @ W + b) / dW and / db (TF's rule: a non-scalar target's sum)."""

    def gradient_scalar_graph(
        self, x: float, w: float, b: float, y_true: float
    ) -> tuple[float, float]:
        """grad(abs(y_true - (x * w + b)), w) and (..., b): the graph of §2.4.4."""


class TrainingVerbs(Protocol):
    """Capability ``training``: §2.5.2-2.5.3."""

    def training_step(
        self,
        model: Model,
        images: Array,
        labels: Array,
        learning_rate: float,
        optimizer: str = "manual",
    ) -> float:
        """One SGD step on the mean loss, in place; returns the loss before it."""

    def update_weights(
        self, gradients: Sequence[Array], weights: Sequence[Array], learning_rate: float
    ) -> None:
        """``w -= learning_rate * g`` in place, for exactly the weights given."""

    def fit(
        self,
        model: Model,
        images: Array,
        labels: Array,
        epochs: int,
        batch_size: int,
        learning_rate: float,
    ) -> Sequence[Sequence[float]]:
        """The book's loop: per epoch, in order, one step per batch; the batch losses."""


class MomentumVerbs(Protocol):
    """Capability ``momentum``: §2.4.3."""

    def momentum_step(
        self, w: Array, g: Array, velocity: Array, learning_rate: float, momentum: float, rule: str
    ) -> tuple[Array, Array]:
        """``rule`` "book", "keras" or "nesterov"; returns ``(w, velocity)`` (Keras' velocity)."""

    def sgd_path(
        self,
        grad: Callable[[float], float],
        w0: float,
        learning_rate: float,
        steps: int,
        momentum: float = 0.0,
        nesterov: bool = False,
    ) -> Sequence[float]:
        """Positions of (momentum) SGD on a 1-D curve: ``steps + 1`` floats from ``w0``."""


class RMSpropVerbs(Protocol):
    """Capability ``rmsprop``: one Keras 2.6 RMSprop step."""

    def rmsprop_step(
        self,
        w: Array,
        g: Array,
        state: Array,
        learning_rate: float = 1e-3,
        rho: float = 0.9,
        epsilon: float = 1e-7,
    ) -> tuple[Array, Array]:
        """One step; returns ``(w, state)``: s = rho s + (1 - rho) g**2,
        w - lr g / (sqrt(s) + epsilon) (epsilon outside the square root, as Keras)."""


class KerasInitVerbs(Protocol):
    """Capability ``keras_init``."""

    def glorot_uniform(self, fan_in: int, fan_out: int, seed: int) -> Array:
        """A (fan_in, fan_out) kernel from U(-limit, limit), limit = sqrt(6 / (in + out))."""


class MnistTrainingVerbs(Protocol):
    """Capability ``mnist_training``: the §2.1 model trained; ``predict`` gives probabilities."""

    def train_first_example(
        self, images: Array, labels: Array, epochs: int, batch_size: int, seed: int
    ) -> Model:
        """§2.1's model (784-512 relu, 10 softmax, Keras init, RMSprop) trained on the data."""


@runtime_checkable
class Adapter(AdapterInfo, CoreVerbs, Protocol):
    """The least an implementation provides to be graded: its metadata and the core verbs."""


class FullAdapter(
    Adapter,
    NaiveOpsVerbs,
    AutodiffVerbs,
    TrainingVerbs,
    MomentumVerbs,
    RMSpropVerbs,
    KerasInitVerbs,
    MnistTrainingVerbs,
    Protocol,
):
    """An adapter claiming every capability (the built-in ones)."""


#: The Protocol declaring each capability's verbs (``random_init``, ``input_checks``,
#: ``single_sample`` and ``dtype_preservation`` add none: they ask more of verbs declared
#: elsewhere).
CAPABILITY_PROTOCOLS: dict[str, type] = {
    "naive_ops": NaiveOpsVerbs,
    "autodiff": AutodiffVerbs,
    "training": TrainingVerbs,
    "momentum": MomentumVerbs,
    "rmsprop": RMSpropVerbs,
    "keras_init": KerasInitVerbs,
    "random_init": object,
    "mnist_training": MnistTrainingVerbs,
    "input_checks": object,
    "single_sample": object,
    "dtype_preservation": object,
}


def _verbs_of(protocol: type) -> tuple[str, ...]:
    return tuple(
        name
        for name, value in vars(protocol).items()
        if callable(value) and not name.startswith("_")
    )


#: The verbs of "core" and of each capability, as declared by the Protocols above.
VERBS: dict[str, tuple[str, ...]] = {
    "core": _verbs_of(CoreVerbs),
    **{cap: _verbs_of(proto) for cap, proto in CAPABILITY_PROTOCOLS.items()},
}


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
