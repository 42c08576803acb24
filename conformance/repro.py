"""The "reproduce with" snippet of a failed spec, in the submission's own terms (issue 27).

A student reads a failure on a report card or on Gradescope, far from the grader: the
snippet must run where they are, with their code. So it calls their own functions and
never imports the grader, nor names a path of the grader's machine:

- graded by the book's names (``BookAdapter``): the book's calls, ``naive_relu(x)``,
  ``NaiveSequential([NaiveDense(...)])``, ``update_weights(gradients, weights)`` after
  setting the ``learning_rate`` global it reads;
- an ``ADAPTER`` in a file: ``impl = ADAPTER`` (imported from the file, by its name only)
  and the adapter's verbs, ``impl.relu(x)``;
- the grader's own adapters (``numpy``, ``torch-cpu``, ``conformance.mutants:...``), for
  course staff: ``load_adapter`` as before; another module's: ``from module import attr``.

Each call is logged by ``conformance.harness.Impl`` as the verb and its rendered
arguments; ``SnippetStyle`` turns them into lines.
"""

from __future__ import annotations

import ast
import keyword
import re
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any

__all__ = ["BOOK_MARK", "SnippetStyle", "style_for"]

#: What ``BookAdapter.name`` says (conformance/grading/book_names.py); the framework follows.
BOOK_MARK = "graded by the book's names, "
_GRADER_ADAPTERS = ("numpy", "torch-cpu", "torch-cuda")

#: Each verb's parameters, in order (conformance/adapter.py's contract).
_PARAMS: dict[str, tuple[str, ...]] = {
    "asarray": ("x", "dtype"),
    "dense_model": ("layers", "weights", "seed"),
    "batches": ("images", "labels", "batch_size", "shuffle", "seed"),
    "sparse_categorical_crossentropy": ("labels", "p", "from_logits"),
    "training_step": ("model", "x", "y", "learning_rate", "optimizer"),
    "update_weights": ("gradients", "weights", "learning_rate"),
    "fit": ("model", "images", "labels", "epochs", "batch_size", "learning_rate"),
    "evaluate": ("model", "images", "labels", "batch_size"),
}

#: The verbs a ``BookAdapter`` serves with NumPy itself (the book calls NumPy there).
_NUMPY_FORMS = {
    "add": "{0} + {1}",
    "relu": "np.maximum({0}, 0.0)",
    "maximum": "np.maximum({0}, {1})",
    "dot": "np.dot({0}, {1})",
    "reshape": "{0}.reshape({1})",
    "transpose": "np.transpose({0})",
    "expand_dims": "np.expand_dims({0}, {1})",
    "getitem": "{0}[{1}]",
    "preprocess": "{0}.reshape((len({0}), 28 * 28)).astype('float32') / 255",
    "to_numpy": "np.asarray({0})",
    "model_weights": "{0}.weights",
    "predict": "{0}({1})",
    "naive_matrix_vector_dot_via_vector_dot": "naive_matrix_vector_dot({0}, {1})",
}

#: The activations the book passes to NaiveDense, by framework (book_names._activations).
_ACTIVATIONS = {
    "numpy": {
        "relu": '(relu if "relu" in globals() else (lambda x: np.maximum(x, 0.0)))',
        "softmax": "softmax",
    },
    "tensorflow": {"relu": "tf.nn.relu", "softmax": "tf.nn.softmax"},
    "torch": {"relu": "torch.relu", "softmax": "(lambda x: torch.softmax(x, dim=-1))"},
}
_FW_IMPORT = {"tensorflow": "import tensorflow as tf", "torch": "import torch"}
_FW_SEED = {"tensorflow": "tf.random.set_seed({})", "torch": "torch.manual_seed({})"}


@dataclass(frozen=True)
class SnippetStyle:
    """How one grade's snippets read: ``kind`` is "book", "adapter" or "grader"."""

    kind: str
    spec: str
    module: str | None = None  # the submission's module name, if importable by it
    where: str = ""  # the comment telling the student where to run it
    framework: str = "numpy"

    def preamble(self) -> list[str]:
        lines = ["import base64, zlib", "import numpy as np", "from numpy import inf, nan"]
        if self.kind == "grader":
            if self.spec in _GRADER_ADAPTERS or self.spec.startswith("conformance"):
                lines += ["from conformance.adapter import load_adapter"]
                return [*lines, f"impl = load_adapter({self.spec!r})"]
            target, _, attr = self.spec.partition(":")
            return [*lines, f"from {target} import {attr or 'ADAPTER'} as impl"]
        if self.framework in _FW_IMPORT:
            lines.append(_FW_IMPORT[self.framework])
        lines.append(self.where)
        if self.kind == "book":
            return lines + ([f"from {self.module} import *"] if self.module else [])
        attr = self.spec.partition(":")[2] or "ADAPTER"
        if self.module:
            return [*lines, f"from {self.module} import {attr} as impl"]
        return [*lines, f"impl = {attr}"]

    def call(
        self, verb: str, args: list[str], kwargs: dict[str, str], var: str | None
    ) -> list[str]:
        """The lines of one call; ``var`` receives its result (None: a must-raise call)."""
        if self.kind != "book":
            shown = ", ".join([*args, *(f"{k}={v}" for k, v in kwargs.items())])
            return [f"{var} = impl.{verb}({shown})" if var else f"impl.{verb}({shown})"]
        params = dict(zip(_PARAMS.get(verb, ()), args, strict=False))
        params.update(kwargs)
        lines, expr = self._book(verb, args, params)
        return [*lines, f"{var} = {expr}" if var else expr]

    def show(self, var: str) -> str:
        if self.kind == "book":
            return f"print({var!r}, repr({var}))"
        return f"print({var!r}, repr(impl.to_numpy({var})))"

    # -- the book's calls ------------------------------------------------------------------
    def _global(self, name: str, value: str) -> str:
        """Set a module global the book's code reads (``learning_rate``)."""
        if self.module:
            return f"import {self.module}; {self.module}.{name} = {value}  # your code reads it"
        return f"{name} = {value}  # your code reads this global"

    def _book(self, verb: str, args: list[str], p: dict[str, str]) -> tuple[list[str], str]:
        if verb == "predict" and self.framework == "torch":
            return [], f"{args[0]}(torch.as_tensor({args[1]}))"
        if verb in _NUMPY_FORMS:
            return [], _NUMPY_FORMS[verb].format(*args)
        if verb == "asarray":
            return [], f"np.asarray({p['x']}, dtype={p.get('dtype', 'None')})"
        if verb.startswith("naive_"):
            return [], f"{verb}({', '.join(args)})"
        if verb == "dense_model":
            return self._model(p)
        if verb == "batches":
            gen = f"_gen = BatchGenerator({p['images']}, {p['labels']}, {p['batch_size']})"
            return [gen], "[_gen.next() for _ in range(_gen.num_batches)]"
        if verb == "sparse_categorical_crossentropy":
            logits = ", from_logits=True" if p.get("from_logits") == "True" else ""
            return [], f"sparse_categorical_crossentropy({p['labels']}, {p['p']}{logits})"
        lr = [self._global("learning_rate", p["learning_rate"])] if "learning_rate" in p else []
        if verb == "training_step":
            return lr, f"one_training_step({p['model']}, {p['x']}, {p['y']})"
        if verb == "update_weights":
            return lr, f"update_weights({p['gradients']}, {p['weights']})"
        if verb == "fit":
            given = ", ".join(p[k] for k in ("model", "images", "labels", "epochs", "batch_size"))
            return lr, f"fit({given})"
        if verb == "evaluate":
            m, x, y = p["model"], p["images"], p["labels"]
            notebook = f"float(np.mean(np.argmax(np.asarray({m}({x})), axis=1) == {y}))"
            return [], f'(evaluate({m}, {x}, {y}) if "evaluate" in globals() else {notebook})'
        return [], f"{verb}({', '.join(args)})  # not one of the book's names"

    def _model(self, p: dict[str, str]) -> tuple[list[str], str]:
        """The §2.5.1 model as the book builds it, then the spec's weights put in."""
        try:
            layers = ast.literal_eval(p["layers"])
        except (ValueError, SyntaxError, KeyError):
            return [], f"NaiveSequential(...)  # layers {p.get('layers')}"
        acts = _ACTIVATIONS.get(self.framework, _ACTIVATIONS["numpy"])
        built = ", ".join(
            f"NaiveDense({n_in}, {n_out}, {acts.get(str(a), '(lambda x: x)')})"
            for n_in, n_out, a in layers
        )
        seed = f"{p.get('seed', 'None')} or 0"
        lines = [f"np.random.seed({seed})", f"_layers = [{built}]"]
        if self.framework in _FW_SEED:  # the grader seeds the framework's generator too
            lines.insert(1, _FW_SEED[self.framework].format(seed))
        if p.get("weights", "None") != "None":
            put = {
                "tensorflow": "_l.W.assign(_W); _l.b.assign(_b)",
                "torch": "_l.W.data.copy_(torch.as_tensor(_W)); "
                "_l.b.data.copy_(torch.as_tensor(_b))",
            }.get(self.framework, "_l.W, _l.b = np.array(_W), np.array(_b)")
            loop = f"for _l, _W, _b in zip(_layers, _w[0::2], _w[1::2]): {put}"
            lines += [f"_w = {p['weights']}", loop]
        return lines, "NaiveSequential(_layers)"


def style_for(spec: str, adapter_name: Any) -> SnippetStyle:
    """The snippet style of a grade of ``spec`` (``--impl``) whose adapter is named so."""
    target = spec.partition(":")[0]
    path = PurePath(target)
    is_path = target.endswith((".py", ".ipynb")) or "/" in target or "\\" in target
    if not is_path:
        return SnippetStyle("grader", spec)
    name = str(adapter_name or "")
    book = BOOK_MARK in name
    framework = name.partition(BOOK_MARK)[2].rstrip(")").strip() or "numpy"
    importable = path.stem.isidentifier() and not keyword.iskeyword(path.stem)
    module = path.stem if path.suffix == ".py" and importable else None
    shown = re.sub(r"[^\w.\- ]", "_", path.name)  # a comment, whatever the file is called
    if module:
        where = f"# run in the folder of your {shown}"
    elif path.suffix == ".ipynb":
        where = f"# run in a new cell at the end of your notebook {shown}, after its cells"
    else:
        where = "# run after your code (in the same namespace), in your submission's folder"
    kind = "book" if book else "adapter"
    return SnippetStyle(kind, spec, module, where, framework if book else "numpy")
