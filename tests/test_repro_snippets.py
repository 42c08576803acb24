"""Issue 27 item 6: a failed spec's "reproduce with" snippet runs where the student is.

It calls the student's own functions (the book's names, or their ADAPTER's verbs), imports
nothing of the grader and names no path of the grader's machine; run in the submission's
folder it shows the wrong value the report states.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fixtures.book_notebooks import book_cells

try:
    import tomllib
except ImportError:  # Python < 3.11
    import tomli as tomllib

from conformance.repro import style_for

ROOT = Path(__file__).resolve().parent.parent
BUGS = ROOT / "tests" / "fixtures" / "student_bugs"
#: The book-style NumPy cells that define the chapter's code (no MNIST, plot or training).
BOOK_CODE = [1, *range(4, 14), *range(15, 20)]


def _grade(folder: Path, name: str, *select: str) -> dict[str, Any]:
    report = folder / "report.json"
    cmd = [sys.executable, "-m", "pytest", "conformance", "-p", "no:cacheprovider", "-q",
           "--impl", str(folder / name), "--report-json", str(report), "-m", "not slow",
           "-k", " or ".join(select)]  # fmt: skip
    env = {**os.environ, "DL_CH2_ISOLATION": "process"}
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)
    assert report.exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    return {s["id"].rpartition("::")[2]: s for s in json.loads(report.read_text())["specs"]}


def _snippet(message: str) -> str:
    body = message.split("reproduce with:\n", 1)[1]
    return "\n".join(ln[4:] for ln in body.splitlines() if ln.startswith("    "))


def _run(snippet: str, folder: Path) -> subprocess.CompletedProcess[str]:
    assert "conformance" not in snippet and "/autograder" not in snippet, snippet
    assert str(folder) not in snippet and "/tmp" not in snippet, snippet
    return subprocess.run([sys.executable, "-c", snippet], cwd=folder, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "PYTHONPATH": ""})  # fmt: skip


def _got(message: str) -> float:
    m = re.search(r"largest absolute difference \S+ at \[[\d, ]*\]: got (\S+), expected", message)
    assert m, message[:2000]
    return float(m[1])


@pytest.fixture(scope="module")
def book_grade(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """The book's NumPy code with two planted bugs: relu as abs, a doubled learning rate."""
    folder = tmp_path_factory.mktemp("book")
    cells = book_cells("numpy")
    source = "\n\n".join(cells[i] for i in BOOK_CODE)
    for old, new in (
        ("x[i, j] = max(x[i, j], 0)", "x[i, j] = abs(x[i, j])"),
        ("w -= g * learning_rate", "w -= g * learning_rate * 2"),
    ):
        assert source.count(old) == 1
        source = source.replace(old, new)
    (folder / "chapter02.py").write_text(source)
    return folder, _grade(folder, "chapter02.py", "naive_ops_equal", "update_weights_subtracts",
                          "test_dense_forward_golden")  # fmt: skip


def _exec(snippet: str, folder: Path) -> dict[str, Any]:
    """Run the snippet here, as ``python`` in the submission's folder would; its names."""
    namespace: dict[str, Any] = {}
    cwd = Path.cwd()
    try:
        os.chdir(folder)
        sys.path.insert(0, str(folder))
        with contextlib.redirect_stdout(io.StringIO()):
            exec(snippet, namespace)
    finally:
        os.chdir(cwd)
        sys.path.remove(str(folder))
        sys.modules.pop("chapter02", None)
    return namespace


def _shows(namespace: dict[str, Any], got: float) -> bool:
    """Whether a result the snippet computed (``outN``) holds the value the report got."""
    values = [
        np.ravel(np.asarray(v, dtype=float))
        for k, v in namespace.items()
        if re.fullmatch(r"out\d+", k) and isinstance(v, np.ndarray | float)
    ]
    values += [np.ravel(w) for k, v in namespace.items() if re.fullmatch(r"out\d+", k)
               and isinstance(v, list) for w in v if isinstance(w, np.ndarray)]  # fmt: skip
    return any(bool(np.any(np.abs(v - got) <= 1e-12 * max(1.0, abs(got)))) for v in values)


def test_a_book_snippet_calls_the_students_naive_relu_and_shows_the_wrong_value(
    book_grade: tuple[Path, dict[str, Any]],
) -> None:
    folder, specs = book_grade
    spec = specs["test_naive_ops_equal_vectorized_and_leave_inputs[naive_relu-xs0-None-<lambda>]"]
    assert spec["outcome"] == "failed"
    snippet = _snippet(spec["message"])
    assert "from chapter02 import *" in snippet and "naive_relu(" in snippet, snippet
    assert "impl" not in snippet, snippet
    # the (20, 10) input is redrawn by a short NumPy recipe, not written out
    assert "np.random.default_rng(2).uniform(-1, 1, (20, 10))" in snippet and len(snippet) < 1000
    run = _run(snippet, folder)
    assert run.returncode == 0 and "array(" in run.stdout, run.stderr[-2000:]
    got = _got(spec["message"])
    assert got > 0 and _shows(_exec(snippet, folder), got)  # abs of a negative: the bug


def test_a_book_snippet_sets_the_learning_rate_global_and_calls_update_weights(
    book_grade: tuple[Path, dict[str, Any]],
) -> None:
    folder, specs = book_grade
    spec = specs["test_update_weights_subtracts_lr_times_gradient_from_the_weights_given"]
    assert spec["outcome"] == "failed"
    snippet = _snippet(spec["message"])
    assert "chapter02.learning_rate = " in snippet and "update_weights(" in snippet, snippet
    assert "impl" not in snippet, snippet
    run = _run(snippet, folder)
    assert run.returncode == 0 and "[array(" in run.stdout, run.stderr[-2000:]
    assert _shows(_exec(snippet, folder), _got(spec["message"])), snippet


def test_a_passing_book_spec_keeps_its_model_snippet_runnable(
    book_grade: tuple[Path, dict[str, Any]],
) -> None:
    folder, specs = book_grade
    assert specs["test_dense_forward_golden"]["outcome"] == "passed"  # NaiveDense is intact
    style = style_for(str(folder / "chapter02.py"), "chapter02 (graded by the book's names, numpy)")
    lines = style.call("dense_model", ["[(3, 2, 'relu')]", "None", "0"], {}, "out0")
    lines += style.call("predict", ["out0", "np.ones((1, 3))"], {}, "out1")
    run = _run("\n".join([*style.preamble(), *lines, style.show("out1")]), folder)
    assert run.returncode == 0 and run.stdout.startswith("out1 array("), run.stderr[-2000:]


def test_an_adapter_snippet_imports_the_students_adapter_by_its_file_name(tmp_path: Path) -> None:
    bug = next(b for b in tomllib.loads((BUGS / "bugs.toml").read_text())["bug"]
               if b["name"] == "relu_max_reduces")  # fmt: skip
    source = (BUGS / "correct.py").read_text()
    assert source.count(bug["old"]) == 1
    (tmp_path / "adapter.py").write_text(source.replace(bug["old"], bug["new"]))
    specs = _grade(tmp_path, "adapter.py", "test_relu", "test_elementwise")
    failed = sorted((s["message"] for s in specs.values() if s["outcome"] == "failed"), key=len)
    assert failed
    snippet = _snippet(failed[0])
    assert "from adapter import ADAPTER as impl" in snippet and "impl.relu(" in snippet, snippet
    run = _run(snippet, tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "print(" in snippet and run.stdout.strip()


@pytest.mark.parametrize(
    ("spec", "want"),
    [
        ("/autograder/submission/chapter02.ipynb", "at the end of your notebook chapter02.ipynb"),
        ("/tmp/dl-ch2-x/sub/my-work.py", "# run after your code"),
        ("/tmp/x/class.py", "# run after your code"),
        ("/tmp/x/a\nimport os.ipynb", "your notebook a_import os.ipynb"),
    ],
)  # fmt: skip
def test_notebook_and_odd_file_names_are_named_without_their_folder(spec: str, want: str) -> None:
    style = style_for(spec, "x (graded by the book's names, tensorflow)")
    text = "\n".join(style.preamble() + style.call("naive_relu", ["out0"], {}, "out1"))
    assert want in text and "import tensorflow as tf" in text and "out1 = naive_relu(out0)" in text
    assert "/autograder" not in text and "/tmp" not in text and "import *" not in text


def test_the_graders_own_adapters_keep_load_adapter() -> None:
    assert "impl = load_adapter('numpy')" in style_for("numpy", "numpy-reference").preamble()
    other = style_for("mypkg.impl:THING", "x").preamble()
    assert "from mypkg.impl import THING as impl" in other


def test_a_torch_book_snippet_builds_the_model_with_the_given_weights_and_predicts(
    tmp_path: Path,
) -> None:
    """The book's model in PyTorch (the book-style torch cells): the snippet's weights go
    into the students' tensors and the prediction comes out, as the grader computed it."""
    torch = pytest.importorskip("torch")
    cells = book_cells("torch")
    code = [c for c in cells if c.startswith(("import", "class Naive", "def relu", "def softmax"))]
    namespace: dict[str, Any] = {}
    exec("\n\n".join(c for c in code if "matplotlib" not in c), namespace)
    style = style_for(str(tmp_path / "chapter02.ipynb"), "c (graded by the book's names, torch)")
    w = "[np.ones((3, 2), dtype='float32'), np.array([0.5, -9.0], dtype='float32')]"
    lines = style.preamble() + style.call("dense_model", ["[(3, 2, 'relu')]", w, "7"], {}, "out0")
    lines += style.call("predict", ["out0", "np.ones((1, 3), dtype='float32')"], {}, "out1")
    assert "torch.manual_seed(7 or 0)" in lines
    exec("\n".join(lines), namespace)
    assert torch.equal(namespace["out1"], torch.tensor([[3.5, 0.0]]))
