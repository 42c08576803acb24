"""A notebook run as shipped, cell by cell, in the worker (issue 27).

The grader sends the notebook's code cells (``[{"number": n, "source": text}]``, JSON) and
the worker runs them in order in one namespace, as Jupyter would: a cell that raises (a
download, a plot, a missing package) is reported by its number with its error, and the
cells after it still run. IPython's syntax is honoured where it means Python
(``%%time``/``%%capture`` run their body, ``%%backend NAME`` selects Keras' backend the way
the notebook's own magic asks) and otherwise skipped with a note (``%matplotlib``, ``!pip``),
never silently. ``mnist.load_data()`` of Keras and torchvision's ``datasets.MNIST`` are served
here, without a network: from the grader's verified MNIST copy, which the grader places beside
the submission (``SERVED_MNIST``, .npy files it read and checked), else from stand-in data of
MNIST's shapes. A cell runs for at most ``CELL_SECONDS`` (a demo that trains for
minutes is stopped, what it defined before stands). A book name defined in two cells is
used as Python would (the last), and the notes say so.

Standard library and NumPy only.
"""

from __future__ import annotations

import ast
import importlib
import importlib.abc
import json
import os
import re
import signal
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["CELL_SECONDS", "DEMO_CELL_SECONDS", "run_notebook"]

#: Seconds one cell may run (a notebook's demo training loop is cut short, with a note).
CELL_SECONDS = 2.0
#: Seconds a demo cell may run: one that defines none of the book's names and imports
#: nothing (a `fit(...)` or `model.fit(...)` call, a plot, a timing loop). What the grade
#: reads is what the cells define; a demo only shows it working, and each second of it was
#: paid on every grade (issue 27: a TF grade <= 10 s). Assignments (``learning_rate = ...``,
#: ``model = ...``, MNIST's ``load_data()``, a copy of arrays read before the cells run, and
#: its reshapes: 0.1-0.2 s on an idle 2-core machine) finish inside it with room for a
#: loaded machine (the limit is wall-clock: it counts waiting too).
DEMO_CELL_SECONDS = 1.0
_RUN_BODY = ("%%time", "%%timeit", "%%capture")
_LINE_MAGIC = re.compile(r"^\s*(?:[\w.,\s]+=\s*)?[%!]")


class CellTimeout(BaseException):
    """A cell ran past CELL_SECONDS (a BaseException: a notebook's `except Exception`
    must not swallow it)."""


#: The folder (in the worker's scratch folder, its working directory) where the grader puts
#: its verified MNIST copy as .npy files, when the submission mentions MNIST.
SERVED_MNIST = "mnist-served"
MNIST_ARRAYS = ("train_images", "train_labels", "test_images", "test_labels")
_SERVED: dict[str, Any] = {"dir": None, "how": None, "source": None, "arrays": None}


def _mnist_arrays() -> list[np.ndarray]:
    """[train images, labels, test images, labels]: the grader's verified copy when it
    placed one, else stand-in data; read or drawn once per worker (before the cells run,
    outside their time limit, when a cell mentions MNIST: ``_preimport``)."""
    if _SERVED["arrays"] is None:
        folder = _SERVED["dir"]
        if folder is not None and all((folder / f"{n}.npy").is_file() for n in MNIST_ARRAYS):
            a = {n: np.load(folder / f"{n}.npy", allow_pickle=False) for n in MNIST_ARRAYS}
            _SERVED["source"] = "the grader's verified MNIST copy"
            _SERVED["arrays"] = [a[n] for n in MNIST_ARRAYS]
        else:
            _SERVED["source"] = "stand-in data of MNIST's shapes"
            (x, y), (tx, ty) = _stand_in_mnist()
            _SERVED["arrays"] = [x, y, tx, ty]
    return list(_SERVED["arrays"])


def _mnist() -> Any:
    """((train images, labels), (test images, labels)), copies of ``_mnist_arrays()`` (as a
    fresh load gives); ``_SERVED["how"]`` says which data was served (for the notes)."""
    x, y, tx, ty = (a.copy() for a in _mnist_arrays())
    _SERVED["how"] = _SERVED["source"]
    return (x, y), (tx, ty)


def _stand_in_mnist() -> Any:
    """MNIST's shapes and dtypes (60,000 + 10,000 uint8 28x28 images, uint8 labels 0-9),
    drawn from a fixed seed: the notebook's cells run, no network needed."""
    rng = np.random.default_rng(0)
    train = rng.integers(0, 256, (60000, 28, 28), dtype=np.uint8)
    test = rng.integers(0, 256, (10000, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, 60000, dtype=np.uint8)
    test_labels = rng.integers(0, 10, 10000, dtype=np.uint8)
    return (train, labels), (test, test_labels)


def load_data(path: str = "mnist.npz") -> Any:
    return _mnist()


def _served_dataset(original: type) -> type:
    """torchvision's ``MNIST`` class, its data served (no download, no files of its own):
    the same attributes (``data`` uint8 (n, 28, 28), ``targets`` int64, ``train``,
    ``transform``, ``target_transform``) and the same ``__getitem__`` and ``__len__``."""

    def __init__(self: Any, root: Any = "", train: bool = True, transform: Any = None,
                 target_transform: Any = None, download: bool = False) -> None:  # fmt: skip
        (train_x, train_y), (test_x, test_y) = _mnist()
        images, labels = (train_x, train_y) if train else (test_x, test_y)
        torch = sys.modules.get("torch")  # torchvision imported it (a stand-in may not have)
        if torch is not None:
            images, labels = torch.from_numpy(images), torch.from_numpy(labels).long()
        else:
            labels = labels.astype(np.int64)
        self.root, self.train = root, train
        self.transform, self.target_transform = transform, target_transform
        self.data, self.targets = images, labels

    return type(original.__name__, (original,), {"__init__": __init__,
                                                "__module__": original.__module__})  # fmt: skip


class _ServeMnist(importlib.abc.MetaPathFinder):
    """After any ``*.datasets.mnist`` module loads (Keras 2 and 3, tf.keras), its
    ``load_data`` is the grader's; after ``torchvision.datasets.mnist``, its ``MNIST`` class
    serves the grader's data (``torchvision.datasets`` imports it from there): no download."""

    def __init__(self) -> None:
        self.served: list[str] = []

    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        if not name.endswith("datasets.mnist"):
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None and spec.loader is not None:
                spec.loader = _Patched(spec.loader, self.served)
                return spec
        return None


class _Patched(importlib.abc.Loader):
    def __init__(self, loader: Any, served: list[str]) -> None:
        self.loader, self.served = loader, served

    def create_module(self, spec: Any) -> Any:
        return self.loader.create_module(spec)

    def exec_module(self, module: Any) -> None:
        self.loader.exec_module(module)
        if hasattr(module, "load_data"):
            module.load_data = load_data
            self.served.append(module.__name__)
        if module.__name__.startswith("torchvision.") and isinstance(
            getattr(module, "MNIST", None), type
        ):
            module.MNIST = _served_dataset(module.MNIST)
            self.served.append(module.__name__)


def _alarm(signum: int, frame: Any) -> None:
    raise CellTimeout


def _backend(cells: list[dict[str, Any]]) -> str | None:
    """The Keras backend the notebook's ``%%backend NAME`` cells need (one name), if any."""
    names = set()
    for cell in cells:
        first = str(cell["source"]).lstrip().split("\n", 1)[0].split()
        if len(first) >= 2 and first[0] == "%%backend":
            names.add(first[-1])
    return names.pop() if len(names) == 1 else None


def python_of(number: int, source: str, backend: str | None) -> tuple[str | None, list[str]]:
    """(the Python a cell stands for, or None to skip it; a note per thing changed)."""
    lines = source.split("\n")
    head = lines[0].strip() if lines else ""
    notes: list[str] = []
    if head.startswith("%%"):
        magic = head.split()[0]
        if magic == "%%backend":
            want = head.split()[-1]
            if want != backend:  # as the notebook's own magic: not this backend, not run
                return None, [f"cell {number}: {head!r} skipped (Keras backend is {backend})"]
            notes.append(f"cell {number}: {head!r} run with KERAS_BACKEND={backend}")
        elif magic in _RUN_BODY:
            notes.append(f"cell {number}: {head!r} honoured: its body runs")
        else:
            return None, [f"cell {number}: the cell magic {head[:60]!r} skipped (not Python)"]
        lines = lines[1:]
    out = []
    for line in lines:
        text = line.lstrip()
        if _LINE_MAGIC.match(line) and not _is_python(text):
            kept = _timed_statement(text)
            indent = line[: len(line) - len(text)]
            out.append(indent + (kept or "pass"))
            what = "honoured: its statement runs" if kept else "skipped (not Python)"
            notes.append(f"cell {number}: {text[:60]!r} {what}")
        else:
            out.append(line)
    return "\n".join(out), notes


def _is_python(text: str) -> bool:
    """``x = a % b`` and ``y != z`` are Python; ``%matplotlib inline`` and ``!pip`` are not."""
    try:
        ast.parse(text.strip())
    except SyntaxError:
        return False
    return not text.startswith(("%", "!"))


def _timed_statement(text: str) -> str | None:
    """``%time stmt`` and ``%timeit stmt`` time a statement: it runs (untimed)."""
    # options: -o, -q, and -n/-r/-p with their numbers (``%timeit -n 3 -r 2 f(1)``)
    match = re.match(r"^%(time|timeit)\s+(?:-[a-zA-Z]\s+(?:\d+\s+)?)*(.+)$", text)
    return match.group(2) if match else None


def _seconds(tree: ast.Module, book_names: tuple[str, ...]) -> float:
    """The cell's time limit: CELL_SECONDS where it defines a book name (or the book's names
    are not known) or imports something, DEMO_CELL_SECONDS for a demo."""
    if not book_names or set(_defined(tree)) & set(book_names):
        return CELL_SECONDS
    if any(isinstance(node, ast.Import | ast.ImportFrom) for node in ast.walk(tree)):
        return CELL_SECONDS
    return DEMO_CELL_SECONDS


def _defined(tree: ast.Module) -> list[str]:
    names = []
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.ClassDef | ast.AsyncFunctionDef):
            names.append(node.name)
        elif isinstance(node, ast.Assign):
            names += [t.id for t in node.targets if isinstance(t, ast.Name)]
    return names


#: Frameworks imported before the first cell, outside its time limit: TensorFlow's import
#: alone can take longer than a cell may run, and an import cut short leaves it broken.
_FRAMEWORKS = ("tensorflow", "keras", "torch", "torchvision", "jax", "matplotlib")


def _preimport(cells: list[dict[str, Any]], backend: str | None) -> list[str]:
    """Import the frameworks the cells import (on the submission's behalf, in its worker)."""
    wanted: list[str] = []
    for cell in cells:
        source, _ = python_of(0, str(cell["source"]), backend)
        try:
            tree = ast.parse(source or "")
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names = [node.module]
            wanted += [n for n in names if n.split(".")[0] in _FRAMEWORKS and n not in wanted]
    notes = []
    for name in wanted:
        try:
            importlib.import_module(name)
        except BaseException as exc:  # its cell raises it again, and it is reported there
            notes.append(f"import {name}: {type(exc).__name__}: {str(exc)[:200]}")
    if any("mnist" in str(cell["source"]).lower() for cell in cells):
        _mnist_arrays()  # read (or drawn) here: a cell that loads MNIST only copies it
    return notes


def _run_cell(code: Any, ns: dict[str, Any], seconds: float) -> None:
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        exec(code, ns)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def _failure(number: int, exc: BaseException, seconds: float) -> str:
    if isinstance(exc, CellTimeout):
        what = "a cell" if seconds == CELL_SECONDS else "a demo cell (it defines no book name)"
        return (
            f"cell {number}: stopped after {seconds:g} s (the grader runs {what} for at most "
            f"that; what the notebook defined before stands)"
        )
    try:
        text = str(exc)[:300]
    except BaseException:  # a __str__ that raises
        text = "(its message could not be read)"
    return f"cell {number}: raised {type(exc).__name__}: {text} (the next cells still ran)"


def statements_as_cells(source: str) -> list[dict[str, Any]]:
    """A .py file's top-level statements, each a cell numbered by its first line (a demo
    statement that fails, a download, a plot, costs that statement alone)."""
    tree = ast.parse(source)
    lines = source.splitlines()
    out = []
    for node in tree.body:
        first = min([node.lineno, *(d.lineno for d in getattr(node, "decorator_list", []))])
        text = "\n".join(lines[first - 1 : node.end_lineno])
        out.append({"number": first, "source": text})
    return out


def run_notebook(
    path: Path, book_names: tuple[str, ...] = ()
) -> tuple[types.ModuleType, list[str]]:
    """Run the notebook's cells (a JSON list written by the grader) in order in one module;
    return it and the notes (failed, stopped and skipped cells, magics, names defined twice).
    A .py file runs the same way, a top-level statement at a time."""
    text = Path(path).read_text()
    cells = statements_as_cells(text) if str(path).endswith(".py") else json.loads(text)
    module = types.ModuleType("submission")
    module.__file__ = str(path)
    sys.modules["submission"] = module
    sys.path.insert(0, str(Path(path).parent))
    backend = _backend(cells)
    notes: list[str] = []
    if backend:
        os.environ["KERAS_BACKEND"] = backend
    finder = _ServeMnist()
    sys.meta_path.insert(0, finder)
    _SERVED["dir"] = Path.cwd() / SERVED_MNIST  # where the grader put it (before any chdir)
    notes += _preimport(cells, backend)
    where: dict[str, list[int]] = {}
    for cell in cells:
        number = int(cell["number"])
        source, changed = python_of(number, str(cell["source"]), backend)
        notes += changed
        if source is None:
            continue
        seconds = CELL_SECONDS
        try:
            code = compile(source, f"<cell {number}>", "exec")
            tree = ast.parse(source)
            for name in _defined(tree):
                where.setdefault(name, []).append(number)
            seconds = _seconds(tree, book_names)
            _run_cell(code, module.__dict__, seconds)
        except BaseException as exc:
            notes.append(_failure(number, exc, seconds))
        if backend and os.environ.get("KERAS_BACKEND") != backend and "keras" not in sys.modules:
            notes.append(
                f"cell {number}: KERAS_BACKEND set back to {backend} (its %%backend cells)"
            )
            os.environ["KERAS_BACKEND"] = backend
    if finder.served and _SERVED["how"]:
        notes.append(f"MNIST ({', '.join(finder.served)}): {_SERVED['how']} served (no network)")
    for name, numbers in where.items():
        if len(numbers) > 1 and (name in book_names or not book_names):
            shown = ", ".join(map(str, numbers))
            notes.append(
                f"{name} is defined in cells {shown}: the last (cell {numbers[-1]}) is used"
            )
    return module, notes
