"""Frozen golden cases: inputs, expected outputs and gradients from the NumPy reference.

``build_cases()`` computes every case in float64 from fixed seeds; ``python -m
conformance.golden`` writes them to ``golden/cases.npz`` and ``golden/manifest.json``
(kilobytes). Specs only *read* the committed files, so a third party can replay them
without the reference, and the implementation under test never regenerates them. A test
checks that regenerating reproduces the committed files.
"""

from __future__ import annotations

import io
import json
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from conformance.atomic import atomic_write

GOLDEN_DIR = Path(__file__).parent / "golden"
FORMAT_VERSION = 1

#: The small model of the model-level cases: 6 -> 5 (relu) -> 4 (softmax).
SMALL_LAYERS = [(6, 5, "relu"), (5, 4, "softmax")]


def _small_model(rng: np.random.Generator) -> Any:
    import conformance.reference as ref

    acts = {"relu": ref.relu, "softmax": ref.softmax}
    model = ref.NaiveSequential(
        [ref.NaiveDense(i, o, acts[a], rng=rng) for i, o, a in SMALL_LAYERS]
    )
    for w in model.weights:  # centre the weights so relu and softmax both do real work
        w[...] = rng.normal(size=w.shape) * 0.8
    return model


class _Cases:
    """The golden arrays (``case/field`` keys) and the manifest, filled case by case."""

    def __init__(self) -> None:
        self.arrays: dict[str, np.ndarray] = {}
        self.manifest: dict[str, Any] = {"format": FORMAT_VERSION, "cases": {}}

    def case(self, name: str, section: str, description: str, **arrays: np.ndarray) -> None:
        self.manifest["cases"][name] = {
            "section": section,
            "description": description,
            "fields": sorted(arrays),
        }
        for k, v in arrays.items():
            self.arrays[f"{name}/{k}"] = np.asarray(v)


def build_cases() -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """All golden arrays (``case/field`` keys) and the manifest describing them."""
    rng = np.random.default_rng(20240202)  # one stream, drawn from in this order
    c = _Cases()
    _elementwise_cases(c, rng)
    _dot_cases(c, rng)
    model, weights, xs, ys = _forward_and_loss_cases(c, rng)
    _gradient_and_step_cases(c, model, weights, xs, ys)
    _trajectory_case(c, rng)
    _momentum_cases(c)
    _rmsprop_case(c, rng)
    _fit_case(c)
    _fit_300_case(c)
    return c.arrays, c.manifest


def _elementwise_cases(c: _Cases, rng: np.random.Generator) -> None:
    """§2.3.1-2.3.2: relu, add and broadcasting."""
    x = rng.uniform(-1, 1, (20, 100))
    y = rng.uniform(-1, 1, (20, 100))
    c.case("relu", "2.3", "element-wise relu of a (20, 100) matrix", x=x, out=np.maximum(x, 0))
    c.case("add", "2.3", "element-wise sum of two (20, 100) matrices", x=x, y=y, out=x + y)
    xb, yb = rng.uniform(-1, 1, (32, 10)), rng.uniform(-1, 1, (10,))
    c.case(
        "broadcast_add",
        "2.3",
        "(32, 10) + (10,) by broadcasting",
        x=xb,
        y=yb,
        out=xb + np.concatenate([np.expand_dims(yb, 0)] * 32, axis=0),
    )
    sq, sv = rng.uniform(-1, 1, (10, 10)), rng.uniform(-1, 1, (10,))
    c.case(
        "broadcast_add_square",
        "2.3",
        "(10, 10) + (10,): the vector is added to every row",
        x=sq,
        y=sv,
        out=sq + sv[None, :],
    )


def _dot_cases(c: _Cases, rng: np.random.Generator) -> None:
    """§2.3.3 the tensor product."""
    v1, v2 = rng.normal(size=5), rng.normal(size=5)
    c.case("dot_vector", "2.3", "vector . vector", x=v1, y=v2, out=np.asarray(np.dot(v1, v2)))
    mx, mv = rng.normal(size=(4, 5)), rng.normal(size=5)
    c.case("dot_matrix_vector", "2.3", "(4, 5) . (5,)", x=mx, y=mv, out=mx @ mv)
    my = rng.normal(size=(5, 3))
    c.case("dot_matrix_matrix", "2.3", "(4, 5) . (5, 3)", x=mx, y=my, out=mx @ my)
    s1, s2 = rng.normal(size=(4, 4)), rng.normal(size=(4, 4))
    c.case(
        "dot_square",
        "2.3",
        "(4, 4) . (4, 4): dot(x, y) differs from dot(y, x)",
        x=s1,
        y=s2,
        out=s1 @ s2,
        out_swapped=s2 @ s1,
    )
    t4, tv, tm = rng.normal(size=(2, 3, 4, 5)), rng.normal(size=5), rng.normal(size=(5, 6))
    c.case(
        "dot_rank4_vector",
        "2.3",
        "(a, b, c, d) . (d,) -> (a, b, c)",
        x=t4,
        y=tv,
        out=np.dot(t4, tv),
    )
    c.case(
        "dot_rank4_matrix",
        "2.3",
        "(a, b, c, d) . (d, e) -> (a, b, c, e)",
        x=t4,
        y=tm,
        out=np.dot(t4, tm),
    )


def _forward_and_loss_cases(c: _Cases, rng: np.random.Generator) -> tuple[Any, list[Any], Any, Any]:
    """§2.5: the small model's forward pass and the loss; the model and data reused after."""
    import conformance.reference as ref

    model = _small_model(rng)
    weights = [w.copy() for w in model.weights]
    xs = rng.uniform(0, 1, (8, 6))
    ys = rng.integers(0, 4, 8)
    c.case(
        "dense_forward",
        "2.5",
        "6-5(relu)-4(softmax) forward pass",
        **{f"w{i}": w for i, w in enumerate(weights)},
        x=xs,
        out=model(xs),
    )

    probs = rng.dirichlet(np.ones(5), size=6)
    probs[0] = [1.0, 0.0, 0.0, 0.0, 0.0]  # saturated: clipped at both ends, renormalised
    probs[1] = [1e-9, 0.5, 0.5 - 1e-9, 0.0, 0.0]
    probs[2] = [0.0, 1.0, 0.0, 0.0, 0.0]  # the label points at an entry clipped up to 1e-7
    labels = np.array([0, 2, 0, 3, 4, 1])
    c.case(
        "loss_probabilities",
        "2.5",
        "sparse categorical crossentropy on probabilities, clipping acting on rows 0-2",
        labels=labels,
        p=probs,
        loss=ref.sparse_categorical_crossentropy(labels, probs),
        grad=ref.sparse_categorical_crossentropy_backward(labels, probs),
    )
    logits = rng.normal(size=(6, 5)) * 4
    c.case(
        "loss_logits",
        "2.5",
        "sparse categorical crossentropy on logits (Keras fit's loss)",
        labels=labels,
        z=logits,
        loss=ref.sparse_categorical_crossentropy(labels, logits, from_logits=True),
        grad=ref.sparse_categorical_crossentropy_backward(labels, logits, from_logits=True),
    )

    return model, weights, xs, ys


def _gradient_and_step_cases(c: _Cases, model: Any, weights: list[Any], xs: Any, ys: Any) -> None:
    """§2.5.2: the model's gradients and one SGD step."""
    import conformance.reference as ref

    loss, grads = ref.loss_and_gradients(model, xs, ys)
    c.case(
        "model_gradients",
        "2.5",
        "gradients of the mean loss w.r.t. the small model's weights",
        **{f"w{i}": w for i, w in enumerate(weights)},
        x=xs,
        y=ys,
        loss=np.asarray(loss),
        **{f"g{i}": g for i, g in enumerate(grads)},
    )

    step_model = _small_model(np.random.default_rng(7))
    w0 = [w.copy() for w in step_model.weights]
    step_loss = ref.one_training_step(step_model, xs, ys, learning_rate=0.1)
    c.case(
        "training_step",
        "2.5",
        "one SGD step, lr 0.1, mean loss",
        **{f"w{i}": w for i, w in enumerate(w0)},
        x=xs,
        y=ys,
        loss=np.asarray(step_loss),
        **{f"after{i}": w for i, w in enumerate(step_model.weights)},
    )


def _trajectory_case(c: _Cases, rng: np.random.Generator) -> None:
    """§2.5.2: 20 SGD steps."""
    import conformance.reference as ref

    traj_model = _small_model(np.random.default_rng(11))
    wt = [w.copy() for w in traj_model.weights]
    tx = rng.uniform(0, 1, (160, 6))
    ty = (tx[:, :4].argmax(axis=1)).astype(np.int64)  # learnable labels
    losses = []
    for k in range(20):
        sl = slice(8 * k, 8 * (k + 1))
        losses.append(ref.one_training_step(traj_model, tx[sl], ty[sl], learning_rate=0.5))
    c.case(
        "trajectory",
        "2.5",
        "20 SGD steps of batch 8, lr 0.5, from identical weights",
        **{f"w{i}": w for i, w in enumerate(wt)},
        x=tx,
        y=ty,
        losses=np.asarray(losses),
        **{f"final{i}": w for i, w in enumerate(traj_model.weights)},
    )


def _momentum_cases(c: _Cases) -> None:
    """§2.4.3: the three momentum rules."""
    import conformance.reference as ref

    curv = np.array([1.0, 3.0, 0.5])
    for rule in ("book", "keras", "nesterov"):
        w, v = np.array([1.0, -2.0, 3.0]), np.zeros(3)
        path = []
        for _ in range(20):
            if rule == "book":
                w, v = ref.naive_momentum_update(w, curv * w, v, 0.05, 0.9)
            else:
                w, v = ref.keras_sgd_update(w, curv * w, v, 0.05, 0.9, nesterov=rule == "nesterov")
            path.append(w.copy())
        c.case(
            f"momentum_{rule}",
            "2.4",
            f"20 steps of the {rule} momentum rule on sum(c * w**2 / 2), lr 0.05, momentum 0.9",
            w0=np.array([1.0, -2.0, 3.0]),
            curvature=curv,
            path=np.array(path),
        )


def _rmsprop_case(c: _Cases, rng: np.random.Generator) -> None:
    """§2.1: Keras' RMSprop."""
    import conformance.reference as ref

    g_seq = rng.normal(size=(10, 3)) * np.array([1.0, 1e-4, 1e-2])  # tiny grads expose eps
    w, s = np.array([0.5, -0.5, 1.0]), np.zeros(3)
    rpath = []
    opt = ref.RMSprop()
    for g in g_seq:
        opt.apply_gradients([g], [w])
        rpath.append(w.copy())
    s = opt.rms[0] if opt.rms else s
    c.case(
        "rmsprop",
        "2.1",
        "10 Keras RMSprop steps (lr 1e-3, rho 0.9, eps 1e-7 outside sqrt)",
        w0=np.array([0.5, -0.5, 1.0]),
        grads=g_seq,
        path=np.array(rpath),
        final_state=s,
    )


def _fit_case(c: _Cases) -> None:
    """§2.5.3: fit over 30 samples."""
    import conformance.reference as ref

    fit_model = _small_model(np.random.default_rng(13))
    wf = [w.copy() for w in fit_model.weights]
    frng = np.random.default_rng(17)
    fx = frng.uniform(0, 1, (30, 6))
    fy = (fx[:, 2:].argmax(axis=1)).astype(np.int64)
    history = ref.fit(fit_model, fx, fy, 2, 8, learning_rate=0.5, print_fn=None)
    c.case(
        "fit",
        "2.5",
        "fit: 2 epochs over 30 samples in order, batches of 8 (the last of 6), lr 0.5",
        **{f"w{i}": w for i, w in enumerate(wf)},
        x=fx,
        y=fy,
        losses=np.asarray(history),
        **{f"final{i}": w for i, w in enumerate(fit_model.weights)},
    )


def _fit_300_case(c: _Cases) -> None:
    """§2.5.3: fit over more samples than one default batch."""
    import conformance.reference as ref

    # more samples than one default batch: batches of 128, 128 and 44
    big_model = _small_model(np.random.default_rng(19))
    wb = [w.copy() for w in big_model.weights]
    brng = np.random.default_rng(23)
    bx = brng.uniform(0, 1, (300, 6))
    by = (bx[:, 1:5].argmax(axis=1)).astype(np.int64)
    big_history = ref.fit(big_model, bx, by, 1, 128, learning_rate=0.5, print_fn=None)
    c.case(
        "fit_300",
        "2.5",
        "fit: 1 epoch over 300 samples in batches of 128 (128, 128, 44), lr 0.5",
        **{f"w{i}": w for i, w in enumerate(wb)},
        x=bx,
        y=by,
        losses=np.asarray(big_history),
        **{f"final{i}": w for i, w in enumerate(big_model.weights)},
    )


def _serialise(arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)  # type: ignore[arg-type]
    return buf.getvalue()


def write(directory: Path = GOLDEN_DIR) -> None:
    arrays, manifest = build_cases()
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in (
        ("cases.npz", _serialise(arrays)),
        ("manifest.json", (json.dumps(manifest, indent=1) + "\n").encode()),
    ):
        atomic_write(directory / name, data)


class Case:
    """One golden case: ``case["x"]`` gives a field as a float64/int64 NumPy array."""

    def __init__(self, name: str, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        self.name, self.meta = name, meta
        self._arrays = arrays

    def __getitem__(self, field: str) -> np.ndarray:
        return self._arrays[f"{self.name}/{field}"]

    def weights(self, prefix: str = "w") -> list[np.ndarray]:
        n = sum(
            1 for f in self.meta["fields"] if f.startswith(prefix) and f[len(prefix) :].isdigit()
        )
        return [self[f"{prefix}{i}"] for i in range(n)]


@lru_cache(maxsize=1)
def _load(directory: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    d = Path(directory)
    with np.load(d / "cases.npz", allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    manifest = json.loads((d / "manifest.json").read_text())
    if manifest.get("format") != FORMAT_VERSION:
        raise ValueError(f"golden format {manifest.get('format')} != {FORMAT_VERSION}")
    return arrays, manifest


def load_case(name: str, directory: Path = GOLDEN_DIR) -> Case:
    arrays, manifest = _load(str(directory))
    if name not in manifest["cases"]:
        raise KeyError(f"no golden case {name!r}; known: {sorted(manifest['cases'])}")
    return Case(name, arrays, manifest["cases"][name])


if __name__ == "__main__":
    write()
    print(f"wrote {GOLDEN_DIR / 'cases.npz'} and {GOLDEN_DIR / 'manifest.json'}")
