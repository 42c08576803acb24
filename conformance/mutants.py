"""Negative controls: deliberately broken variants of the NumPy reference adapter.

Each mutant plants one plausible mistake. ``python -m conformance.mutants`` grades every
mutant with the suite (in parallel subprocesses) and fails unless each one fails at least
one spec; it prints the kill matrix (mutant x chapter section). Grade one by hand with
``pytest conformance --impl conformance.mutants:relu_abs``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

import conformance.reference as ref
from conformance.adapters.numpy_ref import NumpyAdapter
from conformance.reference.losses import EPSILON

SECTION_ORDER = ["2.1", "2.2", "2.3", "2.4", "2.5"]


class _Mutant(NumpyAdapter):
    description = ""

    def __init__(self) -> None:
        super().__init__()
        self.name = f"mutant:{type(self).__name__}"


class RelUAsAbs(_Mutant):
    description = "relu implemented as abs"

    def relu(self, x: Any) -> Any:
        return np.abs(x)

    def naive_relu(self, x: Any) -> Any:
        return np.abs(x)


class BiasNotAdded(_Mutant):
    description = "the dense layer forgets + b"

    def predict(self, model: Any, x: Any) -> Any:
        for layer in model.layers:
            x = layer.activation(x @ layer.W)
        return x


class BroadcastWrongAxis(_Mutant):
    description = "the vector is broadcast along the first axis instead of the last"

    def add(self, x: Any, y: Any) -> Any:
        if np.ndim(y) == 1 and np.ndim(x) == 2 and x.shape[0] == y.shape[0]:
            return x + y[:, None]
        return x + y


class TransposedDot(_Mutant):
    description = "dot(x, y) computes dot(y, x) when the shapes allow it"

    def dot(self, x: Any, y: Any) -> Any:
        if np.ndim(x) == 2 and np.ndim(y) == 2 and x.shape[0] == y.shape[1]:
            return np.dot(y, x)
        return np.dot(x, y)


class LastBatchDropped(_Mutant):
    description = "the last, partial batch is dropped"

    def batches(
        self,
        images: Any,
        labels: Any,
        batch_size: int,
        shuffle: bool = False,
        seed: int | None = None,
    ) -> list[tuple[Any, Any]]:
        out = super().batches(images, labels, batch_size, shuffle, seed)
        return out[:-1] if len(out[-1][0]) < batch_size else out


class ShuffledByDefault(_Mutant):
    description = "batches are shuffled even when shuffle=False"

    def batches(
        self,
        images: Any,
        labels: Any,
        batch_size: int,
        shuffle: bool = False,
        seed: int | None = None,
    ) -> list[tuple[Any, Any]]:
        return super().batches(images, labels, batch_size, True, 0 if seed is None else seed)


class FitIgnoresBatchSize(_Mutant):
    description = "the notebook's fit: batches of 128 whatever batch_size says"

    def batches(
        self,
        images: Any,
        labels: Any,
        batch_size: int,
        shuffle: bool = False,
        seed: int | None = None,
    ) -> list[tuple[Any, Any]]:
        return super().batches(images, labels, 128, shuffle, seed)


class WWrongRange(_Mutant):
    description = "NaiveDense draws W from U[0, 1) instead of U[0, 0.1)"

    def dense_model(
        self,
        layers: Sequence[tuple[int, int, str]],
        weights: Sequence[np.ndarray] | None,
        seed: int,
    ) -> Any:
        model = super().dense_model(layers, weights, seed)
        if weights is None:
            for layer in model.layers:
                layer.W *= 10
        return model


class NoClipping(_Mutant):
    description = "the loss takes log(p) without clipping"

    def sparse_categorical_crossentropy(
        self, labels: Any, predictions: Any, from_logits: bool = False
    ) -> Any:
        if from_logits:
            return super().sparse_categorical_crossentropy(labels, predictions, True)
        p = np.asarray(predictions)
        with np.errstate(divide="ignore"):
            return np.log(p.sum(axis=1)) - np.log(p[np.arange(len(labels)), labels])


class ClipWithoutRenormalising(_Mutant):
    description = "the loss clips, then takes -log(p_y) without renormalising"

    def sparse_categorical_crossentropy(
        self, labels: Any, predictions: Any, from_logits: bool = False
    ) -> Any:
        if from_logits:
            return super().sparse_categorical_crossentropy(labels, predictions, True)
        c = np.clip(predictions, EPSILON, 1 - EPSILON)
        return -np.log(c[np.arange(len(labels)), labels])


class GradientWhereClipped(_Mutant):
    description = "the loss gradient is non-zero where clipping acted"

    def loss_gradient(self, labels: Any, predictions: Any, from_logits: bool = False) -> Any:
        if from_logits:
            return super().loss_gradient(labels, predictions, True)
        p = np.asarray(predictions)
        c = np.clip(p, EPSILON, 1 - EPSILON)
        g = np.repeat((1 / c.sum(axis=1))[:, None], p.shape[1], axis=1)
        g[np.arange(len(labels)), labels] -= 1 / c[np.arange(len(labels)), labels]
        return g / len(labels)


class SumInsteadOfMean(_Mutant):
    description = "the training step descends the summed loss, not the batch mean"

    def training_step(
        self, model: Any, images: Any, labels: Any, learning_rate: float, optimizer: str = "manual"
    ) -> float:
        loss, grads = ref.loss_and_gradients(model, images, labels)
        ref.update_weights(grads, model.weights, learning_rate * len(labels))
        return loss * len(labels)


class MomentumSignFlipped(_Mutant):
    description = "the 1st edition's momentum sign: velocity = m * v + lr * g"

    def momentum_step(
        self, w: Any, g: Any, velocity: Any, learning_rate: float, momentum: float, rule: str
    ) -> tuple[Any, Any]:
        if rule != "book":
            return super().momentum_step(w, g, velocity, learning_rate, momentum, rule)
        v = velocity * momentum + learning_rate * g
        return w + momentum * v - learning_rate * g, v


class NesterovPlainSwapped(_Mutant):
    description = "Nesterov and plain momentum swapped"

    def momentum_step(
        self, w: Any, g: Any, velocity: Any, learning_rate: float, momentum: float, rule: str
    ) -> tuple[Any, Any]:
        swap = {"keras": "nesterov", "nesterov": "keras"}.get(rule, rule)
        return super().momentum_step(w, g, velocity, learning_rate, momentum, swap)


class RMSpropEpsInsideSqrt(_Mutant):
    description = "RMSprop adds epsilon inside the square root"

    def rmsprop_step(
        self,
        w: Any,
        g: Any,
        state: Any,
        learning_rate: float = 1e-3,
        rho: float = 0.9,
        epsilon: float = 1e-7,
    ) -> tuple[Any, Any]:
        state = rho * state + (1 - rho) * g * g
        return w - learning_rate * g / np.sqrt(state + epsilon), state


class RMSpropTorchAlpha(_Mutant):
    description = "RMSprop with torch's default alpha 0.99 instead of Keras' rho 0.9"

    def rmsprop_step(
        self,
        w: Any,
        g: Any,
        state: Any,
        learning_rate: float = 1e-3,
        rho: float = 0.9,
        epsilon: float = 1e-7,
    ) -> tuple[Any, Any]:
        return super().rmsprop_step(w, g, state, learning_rate, 0.99, epsilon)


class UpdatesTheWrongModel(_Mutant):
    description = "the notebook's update_weights: it updates the first model it ever saw"

    def __init__(self) -> None:
        super().__init__()
        self._global_model: Any = None

    def training_step(
        self, model: Any, images: Any, labels: Any, learning_rate: float, optimizer: str = "manual"
    ) -> float:
        if self._global_model is None:
            self._global_model = model
        loss, grads = ref.loss_and_gradients(model, images, labels)
        ref.update_weights(grads, self._global_model.weights, learning_rate)
        return loss


class SoftmaxWrongAxis(_Mutant):
    description = "softmax normalises over the batch axis"

    def predict(self, model: Any, x: Any) -> Any:
        for layer in model.layers:
            z = x @ layer.W + layer.b
            if layer.activation is ref.softmax:
                e = np.exp(z - z.max(axis=0, keepdims=True))
                x = e / e.sum(axis=0, keepdims=True)
            else:
                x = layer.activation(z)
        return x


class GlorotWrongLimit(_Mutant):
    description = "glorot_uniform with limit sqrt(6 / fan_in)"

    def glorot_uniform(self, fan_in: int, fan_out: int, seed: int) -> Any:
        limit = np.sqrt(6 / fan_in)  # Keras': sqrt(6 / (fan_in + fan_out))
        return np.random.default_rng(seed).uniform(-limit, limit, (fan_in, fan_out))


class ReshapeColumnMajor(_Mutant):
    description = "reshape fills in column-major (Fortran) order"

    def reshape(self, x: Any, shape: tuple[int, ...]) -> Any:
        return np.reshape(x, shape, order="F")


class EvaluateCountsErrors(_Mutant):
    description = "evaluate returns the error rate"

    def evaluate(
        self, model: Any, images: Any, labels: Any, batch_size: int | None = None
    ) -> float:
        return 1.0 - super().evaluate(model, images, labels, batch_size)


class EvaluateFirst128Only(_Mutant):
    description = "evaluate looks at the first default batch (128 samples) only"

    def evaluate(
        self, model: Any, images: Any, labels: Any, batch_size: int | None = None
    ) -> float:
        if len(images) == len(labels):  # unequal lengths are still refused
            images, labels = images[:128], labels[:128]
        return super().evaluate(model, images, labels, batch_size)


class FitFirst128Only(_Mutant):
    description = "fit trains on the first default batch (128 samples) only"

    def fit(
        self,
        model: Any,
        images: Any,
        labels: Any,
        epochs: int,
        batch_size: int,
        learning_rate: float,
    ) -> Any:
        if len(images) == len(labels):  # unequal lengths are still refused
            images, labels = images[:128], labels[:128]
        return super().fit(model, images, labels, epochs, batch_size, learning_rate)


MUTANTS: dict[str, type[_Mutant]] = {
    "relu_abs": RelUAsAbs,
    "bias_not_added": BiasNotAdded,
    "broadcast_wrong_axis": BroadcastWrongAxis,
    "transposed_dot": TransposedDot,
    "last_batch_dropped": LastBatchDropped,
    "shuffled_by_default": ShuffledByDefault,
    "fit_ignores_batch_size": FitIgnoresBatchSize,
    "w_wrong_range": WWrongRange,
    "no_clipping": NoClipping,
    "clip_without_renormalising": ClipWithoutRenormalising,
    "gradient_where_clipped": GradientWhereClipped,
    "sum_instead_of_mean": SumInsteadOfMean,
    "momentum_sign_flipped": MomentumSignFlipped,
    "nesterov_plain_swapped": NesterovPlainSwapped,
    "rmsprop_eps_inside_sqrt": RMSpropEpsInsideSqrt,
    "rmsprop_torch_alpha": RMSpropTorchAlpha,
    "updates_the_wrong_model": UpdatesTheWrongModel,
    "softmax_wrong_axis": SoftmaxWrongAxis,
    "glorot_wrong_limit": GlorotWrongLimit,
    "reshape_column_major": ReshapeColumnMajor,
    "evaluate_counts_errors": EvaluateCountsErrors,
    "evaluate_first_128_only": EvaluateFirst128Only,
    "fit_first_128_only": FitFirst128Only,
}


def __getattr__(name: str) -> Any:
    """``conformance.mutants:<name>`` loads a fresh mutant adapter."""
    if name in MUTANTS:
        return MUTANTS[name]()
    raise AttributeError(name)


def grade(name: str, workdir: Path, extra: Sequence[str] = ()) -> dict[str, Any]:
    """Run the suite on one mutant in a subprocess; returns its report card."""
    report = workdir / f"{name}.json"
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        str(Path(__file__).parent),
        "-q",
        "-p",
        "no:cacheprovider",
        "--impl",
        f"conformance.mutants:{name}",
        "--report-json",
        str(report),
        "-m",
        "not slow",
        *extra,
    ]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    if not report.exists():
        raise RuntimeError(
            f"grading {name} produced no report:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
        )
    result: dict[str, Any] = json.loads(report.read_text())
    return result


def kill_matrix(cards: dict[str, dict[str, Any]]) -> str:
    lines = [
        "| mutant | what it breaks | " + " | ".join(f"§{s}" for s in SECTION_ORDER) + " | killed |",
        "| --- | --- | " + " | ".join("---" for _ in SECTION_ORDER) + " | --- |",
    ]
    for name, card in cards.items():
        cells = []
        total = 0
        for sec in SECTION_ORDER:
            failed = card["sections"].get(sec, {}).get("failed", 0)
            total += failed
            cells.append(str(failed) if failed else ".")
        lines.append(
            f"| {name} | {MUTANTS[name].description} | "
            + " | ".join(cells)
            + f" | {'yes' if total else '**NO**'} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("names", nargs="*", help="mutants to run (default: all)")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--out", default=None, help="write the kill matrix (Markdown) here")
    args = parser.parse_args(argv)
    names = args.names or list(MUTANTS)
    unknown = [n for n in names if n not in MUTANTS]
    if unknown:
        parser.error(f"unknown mutants {unknown}; known: {sorted(MUTANTS)}")
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor(args.jobs) as pool:
        cards = dict(zip(names, pool.map(lambda n: grade(n, Path(tmp)), names), strict=True))
    table = kill_matrix(cards)
    print(table)
    survivors = [
        n for n, c in cards.items() if not any(s.get("failed", 0) for s in c["sections"].values())
    ]
    print(
        f"\n{len(names) - len(survivors)} of {len(names)} mutants killed "
        f"in {time.perf_counter() - start:.0f} s"
    )
    if args.out:
        Path(args.out).write_text(table + "\n")
    if survivors:
        print(f"SURVIVED: {survivors}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
