"""The student starter of an assignment: every verb it covers, documented, not implemented.

``dl-ch2 starter --rubric R [--format py|ipynb] -o PATH`` (and ``python -m conformance
starter ...``) writes it. The verbs are those of the core and of each capability the rubric's
assignment covers (``rubric.covers``), each a function with its signature, the docstring
the adapter contract gives it (conformance/adapter.py) and ``raise NotImplementedError``;
the last part is the ``ADAPTER`` the grader loads, claiming the covered capabilities.
Graded as is, the starter scores 0. As a notebook (nbformat 4), each verb is a cell of its
own, under a Markdown heading per capability.
"""

from __future__ import annotations

import importlib
import inspect
import json
from pathlib import Path
from typing import Any

from conformance.adapter import CAPABILITIES, CAPABILITY_PROTOCOLS, VERBS, CoreVerbs
from conformance.atomic import atomic_write
from conformance.grading.rubric import Rubric

__all__ = ["FORMATS", "starter_cells", "starter_notebook", "starter_source", "write_starter"]

FORMATS = ("py", "ipynb")

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


def starter_notebook(rubric: Rubric, filename: str = "adapter.ipynb") -> str:
    """The starter as a Jupyter notebook (nbformat 4), one cell per verb."""
    # nbformat is untyped (and only this format needs it): reach it as Any
    nbformat: Any = importlib.import_module("nbformat")
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    for kind, source in starter_cells(rubric, filename):
        make = nbformat.v4.new_code_cell if kind == "code" else nbformat.v4.new_markdown_cell
        nb.cells.append(make(source))
    nbformat.validate(nb)
    text: str = nbformat.writes(nb)
    json.loads(text)  # nbformat writes JSON; a failure here is a bug of ours
    return text


def write_starter(rubric: Rubric, path: str | Path, fmt: str | None = None) -> Path:
    """Write the starter to ``path`` (atomically) as .py or .ipynb (default: from the suffix)."""
    target = Path(path)
    fmt = fmt or ("ipynb" if target.suffix == ".ipynb" else "py")
    if fmt not in FORMATS:
        raise ValueError(f"starter format must be one of {FORMATS}, got {fmt!r}")
    text = (
        starter_notebook(rubric, target.name)
        if fmt == "ipynb"
        else starter_source(rubric, target.name)
    )
    return atomic_write(target, text)
