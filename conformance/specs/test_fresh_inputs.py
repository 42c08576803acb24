"""Fresh inputs, drawn for each grade from a secret seed: memorised answers do not pass.

The fixed golden cases can be recognised and answered from memory. Here every grade draws new
inputs (shapes too, never square, more than one default batch of samples where batching
matters) from ``$DL_CH2_GRADE_SECRET``, which the grader sets and the submission's worker
never sees; the expected answers come from the NumPy reference, run by the grader. Without
the variable (a plain ``pytest conformance`` run) the seed is random too, and printed in a
failure so the run can be repeated.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from conformance.adapters.numpy_ref import NumpyAdapter
from conformance.harness import Impl, accuracy_atol, check_close, check_equal, loop_dtype

SECRET = os.environ.get("DL_CH2_GRADE_SECRET") or secrets.token_hex(16)
REF = NumpyAdapter()


@pytest.fixture
def rng(request: pytest.FixtureRequest) -> np.random.Generator:
    digest = hashlib.sha256(f"{SECRET}:{request.node.name}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def _dims(rng: np.random.Generator, n: int, lo: int = 2, hi: int = 9) -> list[int]:
    """``n`` distinct sizes: no square operand hides a wrong axis."""
    return [int(v) for v in rng.choice(np.arange(lo, hi + 1), size=n, replace=False)]


def _what(verb: str) -> str:
    return f"{verb} on fresh inputs drawn for this grade (seed {SECRET[:8]}...)"


def _model(impl: Impl, rng: np.random.Generator) -> tuple[Any, Any, list[np.ndarray], Any]:
    i, h, o = _dims(rng, 3, 3, 9)
    layers = [(i, h, "relu"), (h, o, "softmax")]
    ws = [rng.normal(0, 0.5, (i, h)), rng.normal(0, 0.1, h), rng.normal(0, 0.5, (h, o))]
    ws = [w.astype(impl.dtype) for w in [*ws, rng.normal(0, 0.1, o)]]
    return impl.call("dense_model", layers, ws, 0), REF.dense_model(layers, ws, 0), ws, (i, o)


def _binary(verb: str, make: Callable[[np.random.Generator], tuple[np.ndarray, np.ndarray]]):  # type: ignore[no-untyped-def]
    def run(impl: Impl, rng: np.random.Generator) -> None:
        x, y = make(rng)
        x, y = x.astype(impl.dtype), y.astype(impl.dtype)
        got = impl.run(verb, impl.arr(x), impl.arr(y))
        check_close(impl, got, getattr(REF, verb)(x, y), what=_what(verb))

    return run


def _matrix_vector(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    m, n = _dims(rng, 2)
    return rng.normal(size=(m, n)), rng.normal(size=n)


def _dot_pair(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    m, k, n = _dims(rng, 3)
    return rng.normal(size=(m, k)), rng.normal(size=(k, n))


def _relu(impl: Impl, rng: np.random.Generator) -> None:
    x = rng.normal(size=_dims(rng, 2)).astype(impl.dtype)
    check_close(impl, impl.run("relu", impl.arr(x)), REF.relu(x), what=_what("relu"))


def _transpose_reshape(impl: Impl, rng: np.random.Generator) -> None:
    m, n = _dims(rng, 2)
    x = rng.normal(size=(m, n)).astype(impl.dtype)
    check_close(impl, impl.run("transpose", impl.arr(x)), x.T, what=_what("transpose"))
    got = impl.run("reshape", impl.arr(x), (n, m))
    check_close(impl, got, x.reshape((n, m)), what=_what("reshape"))


def _stretch(impl: Impl, rng: np.random.Generator) -> None:
    # a vector into a matrix, and a matrix along two new axes, every length distinct: a
    # stretch along a wrong axis, or a tile of y's rows (right for a vector only), fails
    a, b, m, n = _dims(rng, 4)
    for y_shape, shape in (((n,), (m, n)), ((b, n), (a, m, b, n))):
        y = rng.normal(size=y_shape).astype(impl.dtype)
        got = impl.run("stretch", impl.arr(y), shape)
        check_close(
            impl, got, REF.stretch(y, shape), what=f"{_what('stretch')}: {y_shape} -> {shape}"
        )


def _naive_matrix_dot(impl: Impl, rng: np.random.Generator) -> None:
    x, y = (a.astype(impl.dtype) for a in _dot_pair(rng))
    got = impl.run("naive_matrix_dot", impl.arr(x), impl.arr(y))
    check_close(
        impl,
        got,
        REF.naive_matrix_dot(x, y),
        what=_what("naive_matrix_dot"),
        expect_dtype=loop_dtype(impl, got),
    )


def _labels_and_probabilities(rng: np.random.Generator, dtype: str) -> tuple[np.ndarray, ...]:
    n, c = _dims(rng, 2, 3, 12)
    logits = rng.normal(0, 3, (n, c))
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return rng.integers(0, c, n).astype("int64"), p.astype(dtype)


def _loss(impl: Impl, rng: np.random.Generator) -> None:
    y, p = _labels_and_probabilities(rng, impl.dtype)
    got = impl.run("sparse_categorical_crossentropy", impl.arr(y, "int64"), impl.arr(p))
    want = REF.sparse_categorical_crossentropy(y, p)
    check_close(impl, got, want, what=_what("sparse_categorical_crossentropy"))


def _loss_gradient(impl: Impl, rng: np.random.Generator) -> None:
    y, p = _labels_and_probabilities(rng, impl.dtype)
    got = impl.run("loss_gradient", impl.arr(y, "int64"), impl.arr(p))
    check_close(impl, got, REF.loss_gradient(y, p), what=_what("loss_gradient"), kind="grad")


def _predict(impl: Impl, rng: np.random.Generator) -> None:
    model, ref_model, _ws, (i, _o) = _model(impl, rng)
    x = rng.normal(size=(int(rng.integers(5, 60)), i)).astype(impl.dtype)
    got = impl.run("predict", model, impl.arr(x))
    check_close(impl, got, REF.predict(ref_model, x), what=_what("predict"))


def _evaluate(impl: Impl, rng: np.random.Generator) -> None:
    model, ref_model, _ws, (i, o) = _model(impl, rng)
    n = int(rng.integers(129, 300))  # more than one default batch
    x = rng.normal(size=(n, i)).astype(impl.dtype)
    y = rng.integers(0, o, n).astype("int64")
    size = int(rng.integers(7, 60))
    acc = impl.scalar("evaluate", model, impl.arr(x), impl.arr(y, "int64"), size)
    want = REF.evaluate(ref_model, x, y, size)
    check_close(impl, np.array(acc), np.array(want), what=_what("evaluate"), rtol=0,
                atol=accuracy_atol(impl, n), expect_dtype="float64")  # fmt: skip


def _batches(impl: Impl, rng: np.random.Generator) -> None:
    n, size = int(rng.integers(130, 400)), int(rng.integers(17, 129))
    x = rng.normal(size=(n, 3)).astype(impl.dtype)
    y = rng.integers(0, 10, n).astype("int64")
    got = impl.call("batches", impl.arr(x), impl.arr(y, "int64"), size)
    want = REF.batches(x, y, size)
    check_equal(impl, len(got), len(want), what=_what("batches") + ": number of batches")
    for k, ((gx, gy), (wx, wy)) in enumerate(zip(got, want, strict=True)):
        check_close(impl, impl.to_np(gx), wx, what=f"{_what('batches')}: images of batch {k}")
        check_equal(impl, impl.to_np(gy), wy, what=f"{_what('batches')}: labels of batch {k}")


def _model_gradients(impl: Impl, rng: np.random.Generator) -> None:
    model, ref_model, _ws, (i, o) = _model(impl, rng)
    n = int(rng.integers(5, 40))
    x = rng.normal(size=(n, i)).astype(impl.dtype)
    y = rng.integers(0, o, n).astype("int64")
    got = impl.run_many("model_gradients", model, impl.arr(x), impl.arr(y, "int64"))
    want = REF.model_gradients(ref_model, x, y)
    for k, (g, w) in enumerate(zip(got, want, strict=True)):
        check_close(impl, g, w, what=f"{_what('model_gradients')}: gradient {k}", kind="grad")


def _training_step(impl: Impl, rng: np.random.Generator) -> None:
    model, ref_model, _ws, (i, o) = _model(impl, rng)
    n = int(rng.integers(5, 40))
    x = rng.normal(size=(n, i)).astype(impl.dtype)
    y = rng.integers(0, o, n).astype("int64")
    lr = float(rng.uniform(0.01, 0.5))
    loss = impl.scalar("training_step", model, impl.arr(x), impl.arr(y, "int64"), lr)
    want = REF.training_step(ref_model, x, y, lr)
    check_close(impl, np.array(loss), np.array(want), what=_what("training_step") + ": loss",
                expect_dtype="float64", kind="grad")  # fmt: skip
    got = impl.run_many("model_weights", model)
    for k, (g, w) in enumerate(zip(got, REF.model_weights(ref_model), strict=True)):
        check_close(impl, g, w, what=f"{_what('training_step')}: weights[{k}]", kind="grad")


def _momentum_rmsprop(verb: str) -> Callable[[Impl, np.random.Generator], None]:
    def run(impl: Impl, rng: np.random.Generator) -> None:
        shape = tuple(_dims(rng, 2))
        w, g, v = (rng.normal(size=shape).astype(impl.dtype) for _ in range(3))
        lr = float(rng.uniform(0.001, 0.1))
        if verb == "momentum_step":
            v = v.astype(impl.dtype)
            args: tuple[Any, ...] = (lr, float(rng.uniform(0.1, 0.95)), "keras")
        else:
            v = np.abs(v)
            args = (lr, float(rng.uniform(0.5, 0.99)), 1e-7)
        got = impl.run_many(verb, impl.arr(w), impl.arr(g), impl.arr(v), *args)
        want = getattr(REF, verb)(w, g, v, *args)
        for k, (a, b) in enumerate(zip(got, want, strict=True)):
            check_close(impl, a, b, what=f"{_what(verb)}: output {k}", kind="grad")

    return run


CASES: dict[str, tuple[str, str | None, Callable[[Impl, np.random.Generator], None]]] = {
    "relu": ("2.3", None, _relu),
    "add_matrix_and_vector": ("2.3", None, _binary("add", _matrix_vector)),
    "maximum_matrix_and_vector": ("2.3", None, _binary("maximum", _matrix_vector)),
    "dot": ("2.3", None, _binary("dot", _dot_pair)),
    "transpose_and_reshape": ("2.3", None, _transpose_reshape),
    "stretch": ("2.3", None, _stretch),
    "naive_matrix_dot": ("2.3", "naive_ops", _naive_matrix_dot),
    "sparse_categorical_crossentropy": ("2.5", None, _loss),
    "loss_gradient": ("2.5", "autodiff", _loss_gradient),
    "predict": ("2.5", None, _predict),
    "evaluate": ("2.5", None, _evaluate),
    "batches": ("2.5", None, _batches),
    "model_gradients": ("2.5", "autodiff", _model_gradients),
    "training_step": ("2.5", "training", _training_step),
    "momentum_step": ("2.4", "momentum", _momentum_rmsprop("momentum_step")),
    "rmsprop_step": ("2.1", "rmsprop", _momentum_rmsprop("rmsprop_step")),
}


def _params() -> list[Any]:
    out = []
    for name, (section, cap, fn) in CASES.items():
        marks = [pytest.mark.section(section)]
        if cap:
            marks.append(pytest.mark.requires(cap))
        out.append(pytest.param(fn, id=name, marks=marks))
    return out


@pytest.mark.parametrize("case", _params())
def test_fresh_inputs(impl: Impl, rng: np.random.Generator, case: Any) -> None:
    case(impl, rng)
