"""The student starter of an assignment.

``dl-ch2 starter --rubric R [--template book|adapter] [--format py|ipynb] -o PATH`` (and
``python -m conformance starter ...``) writes it.

The default, ``book`` (issue 27): the chapter's code cells, blank, in the book's order, each
under a markdown cell stating what the rubric grades in it (its objective and points, what
the function must accept, return and refuse). Students write the book's code under the
book's names and the grader finds it by them: no adapter. As a notebook, each code cell's
metadata names its piece (``{"dl_ch2": {"book": "naive_relu"}}``). Graded blank, every
piece reads "not submitted".

``adapter``: for other frameworks' layouts. The verbs are those of the core and of each
capability the rubric's assignment covers (``rubric.covers``), each a function with its
signature, the docstring the adapter contract gives it (conformance/adapter.py) and
``raise NotImplementedError``; the last part is the ``ADAPTER`` the grader loads, claiming
the covered capabilities. Graded as is, the starter scores 0. As a notebook (nbformat 4),
each verb is a cell of its own, under a Markdown heading per capability.
"""

from __future__ import annotations

import importlib
import inspect
import json
from pathlib import Path
from typing import Any

from conformance.adapter import CAPABILITIES, CAPABILITY_PROTOCOLS, VERBS, CoreVerbs
from conformance.atomic import atomic_write
from conformance.grading.rubric import Objective, Rubric

__all__ = [
    "BOOK_PIECES",
    "FORMATS",
    "TEMPLATES",
    "book_cells",
    "starter_cells",
    "starter_notebook",
    "starter_source",
    "write_starter",
]

FORMATS = ("py", "ipynb")
TEMPLATES = ("book", "adapter")

_HEADER = '''"""My implementation of chapter 2 of Deep Learning with Python, graded by dl-ch2.

Fill in every function below (each says what it must do), then grade it:
    dl-ch2 grade {filename} --rubric rubric.toml --gradescope results.json
"""

import numpy as np'''

_NO_DOC = "See the adapter contract (conformance/README.md) for what this verb returns."


def _groups(rubric: Rubric) -> list[tuple[str, str, tuple[str, ...]]]:
    """(name, what it covers, verbs) for the core and each covered capability with verbs."""
    groups = [("core", "the chapter's tensors, model, batches, loss and evaluation", VERBS["core"])]
    for cap in CAPABILITIES:  # the contract's order
        if cap in rubric.covers and VERBS[cap]:
            groups.append((cap, CAPABILITIES[cap], VERBS[cap]))
    return groups


def _protocol_of(verb: str) -> type:
    for proto in (CoreVerbs, *CAPABILITY_PROTOCOLS.values()):
        if verb in vars(proto):
            return proto
    raise KeyError(verb)


def _function(verb: str) -> str:
    method = vars(_protocol_of(verb))[verb]
    params = list(inspect.signature(method).parameters.values())[1:]  # without self
    shown = ", ".join(p.name if p.default is p.empty else f"{p.name}={p.default!r}" for p in params)
    doc = inspect.cleandoc(method.__doc__ or _NO_DOC)
    body = "\n    ".join(doc.splitlines())
    return f'def {verb}({shown}):\n    """{body}"""\n    raise NotImplementedError'


def _adapter(rubric: Rubric, verbs: list[str]) -> str:
    claimed = sorted(rubric.covers)
    lines = [
        "class StudentAdapter:",
        '    """What the grader loads: metadata, and each verb above as a method."""',
        "",
        '    name = "my-chapter-2"',
        '    version = "1.0"',
        '    devices = ("cpu",)',
        '    dtypes = ("float64",)',
        f"    capabilities = frozenset({claimed!r})",
        "",
        *(f"    {v} = staticmethod({v})" for v in verbs),
        "",
        "",
        "ADAPTER = StudentAdapter()",
    ]
    return "\n".join(lines)


def starter_cells(rubric: Rubric, filename: str = "adapter.py") -> list[tuple[str, str]]:
    """The starter as (kind, source) cells: "markdown" or "code", in order."""
    cells: list[tuple[str, str]] = [("code", _HEADER.format(filename=filename))]
    verbs: list[str] = []
    for name, what, group in _groups(rubric):
        cells.append(("markdown", f"## {name}: {what}"))
        for verb in group:
            cells.append(("code", _function(verb)))
            verbs.append(verb)
    cells.append(("markdown", "## The adapter the grader loads"))
    cells.append(("code", _adapter(rubric, verbs)))
    return cells


def starter_source(rubric: Rubric, filename: str = "adapter.py") -> str:
    """The starter as one Python file (the Markdown headings become comments)."""
    parts = []
    for kind, source in starter_cells(rubric, filename):
        parts.append(source if kind == "code" else f"# {source.removeprefix('## ')}")
    return "\n\n\n".join(parts) + "\n"


def _notebook(cells: list[tuple[str, str, str]]) -> str:
    """Cells (kind, source, book piece) as a Jupyter notebook (nbformat 4)."""
    # nbformat is untyped (and only this format needs it): reach it as Any
    nbformat: Any = importlib.import_module("nbformat")
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    for kind, source, piece in cells:
        make = nbformat.v4.new_code_cell if kind == "code" else nbformat.v4.new_markdown_cell
        cell = make(source)
        if kind == "code" and piece:
            cell.metadata["dl_ch2"] = {"book": piece}
        nb.cells.append(cell)
    nbformat.validate(nb)
    text: str = nbformat.writes(nb)
    json.loads(text)  # nbformat writes JSON; a failure here is a bug of ours
    return text


def starter_notebook(
    rubric: Rubric, filename: str = "adapter.ipynb", template: str = "adapter"
) -> str:
    """The starter as a Jupyter notebook (nbformat 4): the book's blank cells, or one cell
    per verb (the adapter template)."""
    if template == "book":
        return _notebook(book_cells(rubric, filename))
    return _notebook([(k, src, "") for k, src in starter_cells(rubric, filename)])


def _book_source(rubric: Rubric, filename: str) -> str:
    """The book template as one Python file: markdown as comments, a marked blank section
    per piece."""
    parts = []
    for kind, source, piece in book_cells(rubric, filename):
        if kind == "code":
            parts.append(f"# %% {piece}: your code here")
        else:
            parts.append("\n".join(f"# {line}".rstrip() for line in source.splitlines()))
    return "\n\n".join(parts) + "\n"


def write_starter(
    rubric: Rubric, path: str | Path, fmt: str | None = None, template: str = "book"
) -> Path:
    """Write the starter to ``path`` (atomically) as .py or .ipynb (default: from the
    suffix), from the ``book`` template (the default) or the ``adapter`` one."""
    target = Path(path)
    fmt = fmt or ("ipynb" if target.suffix == ".ipynb" else "py")
    if fmt not in FORMATS:
        raise ValueError(f"starter format must be one of {FORMATS}, got {fmt!r}")
    if template not in TEMPLATES:
        raise ValueError(f"--template must be one of {TEMPLATES}, got {template!r}")
    if fmt == "ipynb":
        text = starter_notebook(rubric, target.name, template)
    elif template == "book":
        text = _book_source(rubric, target.name)
    else:
        text = starter_source(rubric, target.name)
    return atomic_write(target, text)


# -- the book template (issue 27): the chapter's code cells, blank, graded by their names ----

#: (piece, the book's call, what the grader requires of it), in the book's order. The
#: requirements are what the default rubric's specs check (conformance/specs).
BOOK_PIECES: tuple[tuple[str, str, str], ...] = (
    (
        "naive_relu",
        "naive_relu(x)",
        """\
- `x` is a rank-2 array (a matrix); any other rank must raise (the book's `assert`).
- Returns a new array equal to `np.maximum(x, 0)`; `x` itself is left unchanged (copy it).
- Works on float64 and float32 inputs (a result in float64, from `np.zeros`, is fine).""",
    ),
    (
        "naive_add",
        "naive_add(x, y)",
        """\
- `x` and `y` are rank-2 arrays of the same shape; other shapes must raise.
- Returns a new array equal to `x + y`; neither input changes.""",
    ),
    (
        "naive_add_matrix_and_vector",
        "naive_add_matrix_and_vector(x, y)",
        """\
- `x` is rank 2, `y` rank 1 with `y.shape[0] == x.shape[1]` (the columns); else raise.
- Returns a new array: `y` added to every row of `x` (`x + y` broadcast); inputs unchanged.""",
    ),
    (
        "naive_vector_dot",
        "naive_vector_dot(x, y)",
        """\
- `x`, `y` rank 1 of equal length, else raise. Returns the number `np.dot(x, y)`.""",
    ),
    (
        "naive_matrix_vector_dot",
        "naive_matrix_vector_dot(x, y)",
        """\
- `x` rank 2, `y` rank 1 with `x.shape[1] == y.shape[0]`, else raise.
- Returns a vector of `x.shape[0]` entries equal to `np.dot(x, y)` (the book writes it twice:
  the last definition is the one graded).""",
    ),
    (
        "naive_matrix_dot",
        "naive_matrix_dot(x, y)",
        """\
- `x`, `y` rank 2 with `x.shape[1] == y.shape[0]`, else raise.
- Returns the `(x.shape[0], y.shape[1])` matrix equal to `np.dot(x, y)`.""",
    ),
    (
        "NaiveDense",
        "NaiveDense(input_size, output_size, activation)",
        """\
- `W` of shape `(input_size, output_size)` drawn uniformly in [0, 0.1) from `np.random`
  (the grader seeds it; Keras' [-0.05, 0.05] is accepted too), `b` zeros of `(output_size,)`.
- Calling the layer on `inputs` returns `activation(inputs @ W + b)`; the property `weights`
  is `[W, b]`. The grader may replace `W` and `b` (float64 or float32): keep their dtype.
- The grader passes your `relu` and `softmax` (define them, NumPy) or the framework's
  (`tf.nn.relu`). `softmax` subtracts each row's own max: logits of 1000 must not overflow.""",
    ),
    (
        "NaiveSequential",
        "NaiveSequential(layers)",
        """\
- Calling it applies the layers in order; `weights` lists every layer's weights in order.""",
    ),
    (
        "BatchGenerator",
        "BatchGenerator(images, labels, batch_size=128)",
        """\
- `num_batches` is `ceil(len(images) / batch_size)`; `next()` returns the next
  `(images, labels)` slice, in order; the last batch is short, never dropped.
- Images and labels of unequal length, or `batch_size` 0, must raise.""",
    ),
    (
        "sparse_categorical_crossentropy",
        "sparse_categorical_crossentropy(labels, predictions)",
        """\
- The per-sample loss as Keras computes it on probabilities: clip `predictions` to
  [1e-7, 1 - 1e-7], divide each row by its sum (renormalise), then `-log` of the label's
  probability. Returns one loss per sample. (TensorFlow code may use Keras' own.)""",
    ),
    (
        "one_training_step",
        "one_training_step(model, images_batch, labels_batch)",
        """\
- Computes the predictions, the *mean* loss over the batch, its gradients with respect to
  `model.weights`, calls `update_weights(gradients, model.weights)`, returns the mean loss.
- Leaves `images_batch` and `labels_batch` unchanged; changes only the model given.""",
    ),
    (
        "update_weights",
        "update_weights(gradients, weights)",
        """\
- Subtracts `gradients[i] * learning_rate` from `weights[i]` in place, for the weights given
  only; `learning_rate` is a module global (the grader sets it for each call).""",
    ),
    (
        "fit",
        "fit(model, images, labels, epochs, batch_size=128)",
        """\
- For each epoch, a `BatchGenerator(images, labels, batch_size)` and one
  `one_training_step` per batch, in order (the grader records the losses through it).
- Honours `batch_size`; images and labels of unequal length must raise.""",
    ),
    (
        "evaluate",
        "evaluate(model, images, labels)  (optional)",
        """\
- The accuracy: the mean of `argmax(model(images), axis=1) == labels` over every sample
  (ties go to the first class); unequal lengths must raise. Without an `evaluate`, the
  notebook's evaluation cell is graded the same way.""",
    ),
)

_BOOK_INTRO = """\
# Chapter 2: the mathematical building blocks of neural networks

Write the chapter's code in the blank cells, as the book does (NumPy, or TensorFlow, PyTorch
or JAX), under the book's names: the grader finds your functions and classes by those names
and calls them as the book does. No adapter is needed. A cell that fails on the grader (a
download, a plot) is reported by its number and the cells after it still run; a name defined
twice is graded as Python runs it, the last definition.

Grade it yourself: `dl-ch2 grade {filename} --rubric rubric.toml`"""

_SETUP = """\
## Imports and helpers

Import what your code uses (`import numpy as np`, `import math`, ...) and define helpers
(the `relu` and `softmax` your `NaiveDense` layers use)."""


def _objective_of(rubric: Rubric, piece: str) -> Objective | None:
    for objective in rubric.objectives:
        if piece in objective.owns and rubric.graded(objective):
            return objective
    return None


def _book_piece_md(rubric: Rubric, piece: str, call: str, needs: str) -> str:
    objective = _objective_of(rubric, piece)
    rule = "all its specs must pass" if rubric.credit == "mastery" else "partial credit"
    graded = (
        f"Graded in: {objective.name} ({objective.points:g} points; {rule})."
        if objective is not None
        else "Not graded in this assignment."
    )
    return f"### `{call}`\n\n{graded}\n\n{needs}"


def _served(rubric: Rubric) -> list[str]:
    """The graded objectives no book piece owns: graded on NumPy's own operations."""
    owned = {p for p, _, _ in BOOK_PIECES}
    return [
        f"- {o.name} ({o.points:g} points)"
        for o in rubric.objectives
        if rubric.graded(o) and not owned & set(o.owns)
    ]


def book_cells(rubric: Rubric, filename: str = "chapter02.ipynb") -> list[tuple[str, str, str]]:
    """The book template as (kind, source, piece) cells: the chapter's pieces in the book's
    order, each a markdown cell (what is graded) and a blank code cell (``piece`` names it)."""
    cells = [("markdown", _BOOK_INTRO.format(filename=filename), ""),
             ("markdown", _SETUP, ""), ("code", "", "setup")]  # fmt: skip
    served = _served(rubric)
    if served:
        text = "\n".join(served)
        intro = "These objectives are graded on NumPy's own operations (slicing, reshape, "
        cells.append(("markdown", f"{intro}transpose): nothing to write.\n\n{text}", ""))
    for piece, call, needs in BOOK_PIECES:
        cells.append(("markdown", _book_piece_md(rubric, piece, call, needs), ""))
        cells.append(("code", "", piece))
    extra = [o.name for o in rubric.objectives if o.extension and rubric.graded(o)]
    if extra:
        cells.append(("markdown", "This assignment also grades opt-in objectives the book has "
                      f"no code for ({', '.join(extra)}): write them with "
                      "`dl-ch2 starter --template adapter`.", ""))  # fmt: skip
    return cells
