"""Which installed libraries a submission's worker may import: seen, not flagged (issue 27).

The grader reads the submission (a .py file, a notebook's code cells, a folder of them) for
the imports of the book's frameworks (TensorFlow/Keras, PyTorch, JAX) and of matplotlib, and
lets the worker import the installed ones, with what they need. ``--allow`` takes import
names (``tensorflow``, ``torch``; a distribution name such as ``tensorflow-cpu`` works too)
and refuses a name nothing installed provides. Nothing here runs the submission: its text
is parsed (``ast``), never imported.
"""

from __future__ import annotations

import ast
import importlib.metadata as md
import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

__all__ = ["DETECTED", "book_entry", "detect_imports", "resolve_packages"]

#: Import names a submission's worker gets without a flag, when installed.
DETECTED = ("tensorflow", "keras", "torch", "torchvision", "jax", "jaxlib", "matplotlib")
#: What Keras 3 needs besides itself: a backend (TensorFlow by default).
_IMPLIED = {"keras": ("tensorflow",), "jax": ("jaxlib",), "torchvision": ("torch",)}
_MAGIC = re.compile(r"^\s*(?:[\w.,\s]+=\s*)?[%!]")


def _sources(path: Path) -> Iterable[str]:
    files = sorted(path.rglob("*")) if path.is_dir() else [path]
    for f in files[:500]:
        try:
            if f.suffix == ".py" and f.stat().st_size < 1 << 22:
                yield f.read_text(errors="replace")
            elif f.suffix == ".ipynb" and f.stat().st_size < 1 << 26:
                cells = json.loads(f.read_text(errors="replace")).get("cells", [])
                for cell in cells:
                    src = cell.get("source", "")
                    yield "".join(src) if isinstance(src, list) else str(src)
        except (OSError, ValueError, AttributeError):
            continue


def _imports(source: str) -> set[str]:
    lines = [("pass" if _MAGIC.match(line) else line) for line in source.split("\n")]
    try:
        tree = ast.parse("\n".join(lines))
    except (SyntaxError, ValueError, RecursionError, MemoryError):  # hostile or broken text
        return set()
    tops: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            tops |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            tops.add(node.module.split(".")[0])
    return tops


def detect_imports(path: Path) -> list[str]:
    """The frameworks (import names of ``DETECTED``) the submission's code imports."""
    found: set[str] = set()
    for source in _sources(path):
        found |= _imports(source) & set(DETECTED)
    for name in list(found):
        found |= set(_IMPLIED.get(name, ()))
    return sorted(found)


def _distribution(name: str, table: Mapping[str, list[str]]) -> str | None:
    """The installed distribution providing the import ``name`` (or named ``name``)."""
    if table.get(name):
        return table[name][0]
    try:
        return str(md.distribution(name).metadata["Name"])
    except md.PackageNotFoundError:
        return None


def resolve_packages(allowed: Iterable[str], detected: Iterable[str] = ()) -> list[str]:
    """Distribution names for the worker: each of ``allowed`` (import or distribution names;
    one nothing installed provides raises ValueError naming it), then each detected
    framework that is installed (one that is not is left out: its import fails in the
    worker and the report says which cell or line)."""
    table = md.packages_distributions()
    out: list[str] = []
    for name in allowed:
        dist = _distribution(str(name), table)
        if dist is None:
            raise ValueError(
                f"--allow {name}: no installed package provides the import {name!r} "
                f"(install it where the grader runs, or check the name)"
            )
        if dist not in out:
            out.append(dist)
    for name in detected:
        dist = _distribution(name, table)
        if dist is not None and dist not in out:
            out.append(dist)
    return out


#: The chapter's names, as a folder's files define or import them (both editions).
_BOOK = re.compile(
    r"\b(naive_relu|naive_add|naive_\w*(?:dot|product)|NaiveDense|NaiveSequential|"
    r"BatchGenerator|one_training_step|update_weights)\b"
)


def book_entry(files: list[Path]) -> Path | None:
    """The file of a folder submission without an ``ADAPTER`` that the grader runs for the
    book's names: its one notebook, else the one .py file naming the book's code that no
    sibling imports (the script the reader runs); None if that is not one file."""
    notebooks = [f for f in files if f.suffix == ".ipynb"]
    if len(notebooks) == 1:
        return notebooks[0]
    named = [f for f in files if f.suffix == ".py" and _BOOK.search(_text(f))]
    imported: set[str] = set()
    for f in files:
        if f.suffix == ".py":
            imported |= _imports(_text(f))
    entries = [f for f in named if f.stem not in imported]
    return entries[0] if len(entries) == 1 else None


def _text(path: Path) -> str:
    try:
        return path.read_text(errors="replace") if path.stat().st_size < 1 << 22 else ""
    except OSError:
        return ""
