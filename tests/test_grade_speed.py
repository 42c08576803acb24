"""What a grade costs (issue 27, issue 31 item 4): start-up, worker starts, repeated work.

No timings here (benchmarks/grade_time.py measures them): each test checks the cause of a
cost, so it fails when the cost comes back.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_the_grade_command_imports_no_torch() -> None:
    """`dl-ch2 grade` of a NumPy submission costs what `python -m conformance grade` does:
    building the CLI and parsing `grade` imports neither torch nor the port's modules."""
    code = (
        "import sys\n"
        "from dl_ch2_tools.cli import build_parser\n"
        "args = build_parser().parse_args(['grade', 'numpy', '--dtype', 'float64'])\n"
        "assert args.command == 'grade'\n"
        "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('dl_ch2.')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_train_options_still_name_their_choices() -> None:
    """--rmsprop's choices are read lazily, and still refuse an unknown variant."""
    from dl_ch2_tools.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(["train", "--rmsprop", "keras-3"]).rmsprop == "keras-3"
    out = subprocess.run(
        [sys.executable, "-m", "dl_ch2_tools.cli", "train", "--rmsprop", "keras-9"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert out.returncode == 2 and "'keras-2.6', 'keras-3'" in out.stderr, out.stderr


class _Echo:
    name = "echo"
    capabilities = frozenset()

    def asarray(self, x: Any, dtype: str | None = None) -> Any:
        return np.array(x, dtype=dtype)

    def broken(self, x: Any) -> Any:
        raise ValueError("broken")


def test_a_passing_spec_does_not_print_its_big_inputs(monkeypatch: pytest.MonkeyPatch) -> None:
    """A big input's literal (compressed) is written only when a snippet is shown: MNIST's
    6,000 images cost 2 s of zlib in every grade, for a snippet nobody read."""
    import zlib

    from conformance import harness

    calls: list[int] = []
    real = zlib.compress
    monkeypatch.setattr(harness.zlib, "compress", lambda b, *a: calls.append(1) or real(b, *a))
    x = np.random.default_rng(0).integers(0, 4, (100, 50)).astype(np.float64)
    impl = harness.Impl(_Echo(), "echo.py", "float64", "cpu")
    handle = impl.arr(x)
    assert calls == []  # nothing printed while the spec passes
    x[0, 0] = 7.0  # the spec changes its own array after the call
    with pytest.raises(pytest.fail.Exception) as info:
        impl.call("broken", handle)
    assert calls, "the failing spec's snippet prints the input"
    snippet = str(info.value).split("reproduce with:\n", 1)[1]
    code = next(line for line in snippet.splitlines() if "impl.asarray(" in line)
    literal = code.split("impl.asarray(", 1)[1].rsplit(", 'float64')", 1)[0]
    import base64

    rebuilt = eval(literal, {"np": np, "zlib": zlib, "base64": base64})  # the suite's own snippet
    assert rebuilt.shape == (100, 50) and rebuilt[0, 0] != 7.0  # as the call saw it
    np.testing.assert_array_equal(rebuilt[1:], x[1:])


def test_a_grade_imports_the_submission_once(tmp_path: Path) -> None:
    """One worker start per grade: the submission's import (a notebook's cells) runs once,
    not once for a metadata probe and again for the specs; a lost worker still restarts."""
    from worker_shared import shared_dir

    marks = shared_dir("dl-ch2-imports-") / "imports"
    marks.touch()
    marks.chmod(0o666)  # each worker may run as a uid of its own
    student = (ROOT / "conformance" / "examples" / "student_numpy.py").read_text()
    path = tmp_path / "counted.py"
    path.write_text(
        student + f"\nwith open({str(marks)!r}, 'a') as _f:\n    _f.write('imported\\n')\n"
        "ADAPTER = StudentAdapter()\n"
    )
    report = tmp_path / "report.json"
    cmd = [sys.executable, "-m", "conformance", "grade", str(path), "--report-json",
           str(report), "--", "-k", "naive_relu"]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    data = json.loads(report.read_text())
    assert data["totals"]["passed"] > 0
    assert marks.read_text().splitlines() == ["imported"]
    assert data["isolation"]["worker_starts"] == 1


def test_a_bad_adapter_is_still_a_one_line_usage_error_before_any_spec(tmp_path: Path) -> None:
    """Without the probe, the grade's own worker finds the bad attribute: exit 2, one line
    naming it, no report card, pytest's own ERROR line not printed."""
    path = tmp_path / "bad.py"
    student = (ROOT / "conformance" / "examples" / "student_numpy.py").read_text()
    path.write_text(student + "\nclass Bad(StudentAdapter):\n    capabilities = 'training'\n"
                    "ADAPTER = Bad()\n")  # fmt: skip
    out = subprocess.run([sys.executable, "-m", "conformance", "grade", str(path)],
                         capture_output=True, text=True, cwd=tmp_path, timeout=300,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})  # fmt: skip
    assert out.returncode == 2, out.stderr[-2000:]
    errors = [line for line in out.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and errors[0].startswith("conformance grade: error: "), out.stderr
    assert "capabilities" in errors[0]
    assert "report card" not in out.stdout


def _run_cells(tmp_path: Path, sources: list[str], monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """``cells.run_notebook`` in this process (its import hook and path undone after)."""
    from conformance.grading import cells

    monkeypatch.setattr(sys, "meta_path", list(sys.meta_path))
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.delitem(sys.modules, "submission", raising=False)
    path = tmp_path / "nb.cells.json"
    path.write_text(json.dumps([{"number": i + 1, "source": s} for i, s in enumerate(sources)]))
    _module, notes = cells.run_notebook(path, ("fit", "naive_relu"))
    return notes


def test_a_demo_cell_runs_for_less_than_a_cell_defining_book_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cell that defines no book name and imports nothing (a demo: `fit(...)` on MNIST)
    is stopped sooner than one that defines the book's code; both notes say which limit."""
    from conformance.grading import cells

    monkeypatch.setattr(cells, "CELL_SECONDS", 0.3)
    monkeypatch.setattr(cells, "DEMO_CELL_SECONDS", 0.1)  # (1 s in a grade)
    spin = "while True:\n    pass\n"
    notes = _run_cells(
        tmp_path,
        ["def fit(x):\n    return x\n" + spin,  # defines a book name: the full limit
         "import json\n" + spin,  # an import: the full limit (an import cut short breaks)
         "fit(1)\n" + spin,  # a demo
         "rate = 0.1\n" + spin],  # defines no book name: a demo too
        monkeypatch,
    )  # fmt: skip
    stopped = [n for n in notes if "stopped after" in n]
    assert [n.split(":")[0] for n in stopped] == ["cell 1", "cell 2", "cell 3", "cell 4"]
    assert "after 0.3 s (the grader runs a cell " in stopped[0]
    assert "after 0.3 s (the grader runs a cell " in stopped[1]
    assert "after 0.1 s (the grader runs a demo cell (it defines no book name)" in stopped[2]
    assert "after 0.1 s" in stopped[3]


_FAKE_TORCHVISION = {
    "torchvision/__init__.py": "from . import datasets\n",
    "torchvision/datasets/__init__.py": "from .mnist import MNIST\n",
    # as torchvision's: a download needs the network, which no worker has
    "torchvision/datasets/mnist.py": (
        "class MNIST:\n"
        "    classes = [str(i) for i in range(10)]\n"
        "    def __init__(self, root, train=True, transform=None, target_transform=None,"
        " download=False):\n"
        "        raise RuntimeError('downloading MNIST needs the network')\n"
        "    def __len__(self):\n        return len(self.data)\n"
        "    def __getitem__(self, i):\n        return self.data[i], int(self.targets[i])\n"
    ),
    "fakekeras/__init__.py": "",
    "fakekeras/datasets/__init__.py": "",
    "fakekeras/datasets/mnist.py": (
        "def load_data(path='mnist.npz'):\n"
        "    raise OSError('downloading MNIST needs the network')\n"
    ),
}

_MNIST_CELLS = [
    "import torchvision\nfrom fakekeras.datasets import mnist\n",
    "(train_images, train_labels), (test_images, test_labels) = mnist.load_data()\n",
    "test_set = torchvision.datasets.MNIST('data', train=False, download=True)\n",
]

_REPORT = """
import json, sys
from pathlib import Path
from conformance.grading import cells
module, notes = cells.run_notebook(Path('nb.cells.json'), ('fit',))
ns = vars(module)
print(json.dumps({
    "keras": [list(ns["train_images"].shape), str(ns["train_images"].dtype),
              ns["test_labels"][:8].tolist()],
    "torchvision": [type(ns["test_set"]).__mro__[1].__module__, len(ns["test_set"]),
                    int(ns["test_set"][3][1]), list(ns["test_set"].data.shape)],
    "notes": notes,
}))
"""


def _serve(tmp_path: Path, arrays: dict[str, np.ndarray] | None) -> dict[str, Any]:
    """Run the MNIST cells in a fresh process (torchvision, if installed, never loaded)."""
    for name, text in _FAKE_TORCHVISION.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    cells = [{"number": i + 1, "source": s} for i, s in enumerate(_MNIST_CELLS)]
    (tmp_path / "nb.cells.json").write_text(json.dumps(cells))
    if arrays is not None:
        from conformance.grading.cells import SERVED_MNIST

        (tmp_path / SERVED_MNIST).mkdir()
        for name, array in arrays.items():
            np.save(tmp_path / SERVED_MNIST / f"{name}.npy", array)
    out = subprocess.run([sys.executable, "-c", _REPORT], cwd=tmp_path, capture_output=True,
                         text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    return dict(json.loads(out.stdout.splitlines()[-1]))


def test_keras_and_torchvision_mnist_are_served_from_the_graders_copy(tmp_path: Path) -> None:
    """Keras' ``mnist.load_data()`` and torchvision's ``datasets.MNIST(..., download=True)``
    (a stand-in torchvision package: torchvision is not installed everywhere the tests run;
    the hook is the same for the real one, whose ``torchvision.datasets`` imports ``MNIST``
    from ``torchvision.datasets.mnist``) get what the grader placed beside the submission."""
    rng = np.random.default_rng(1)
    arrays = {
        "train_images": rng.integers(0, 256, (12, 28, 28), dtype=np.uint8),
        "train_labels": rng.integers(0, 10, 12, dtype=np.uint8),
        "test_images": rng.integers(0, 256, (9, 28, 28), dtype=np.uint8),
        "test_labels": rng.integers(0, 10, 9, dtype=np.uint8),
    }
    seen = _serve(tmp_path, arrays)
    assert seen["keras"] == [[12, 28, 28], "uint8", arrays["test_labels"][:8].tolist()]
    # torchvision's own class (subclassed), the test split, labels as the grader's copy
    assert seen["torchvision"] == ["torchvision.datasets.mnist", 9,
                                   int(arrays["test_labels"][3]), [9, 28, 28]]  # fmt: skip
    notes = "\n".join(seen["notes"])
    assert "the grader's verified MNIST copy served (no network)" in notes, notes
    assert "raised" not in notes, notes


def test_mnist_without_the_graders_copy_is_stand_in_data(tmp_path: Path) -> None:
    seen = _serve(tmp_path, None)
    assert seen["keras"][:2] == [[60000, 28, 28], "uint8"]
    assert seen["torchvision"][1:] == [10000, seen["torchvision"][2], [10000, 28, 28]]
    assert "stand-in data of MNIST's shapes served" in "\n".join(seen["notes"])


def test_the_grader_places_its_verified_mnist_only_for_a_submission_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The grader's side: md5-checked files (conformance.data), never a copy failing its
    check, nothing for a submission that does not mention MNIST."""
    from conformance import data
    from conformance.grading.cells import MNIST_ARRAYS, SERVED_MNIST
    from conformance.grading.client import _serve_mnist

    names = tmp_path / "uses.py"
    names.write_text("from tensorflow.keras.datasets import mnist\n")
    other = tmp_path / "other.py"
    other.write_text("import numpy as np\n")
    # a copy whose bytes are not MNIST's: refused, the worker serves stand-in data
    bad = tmp_path / "bad" / "MNIST" / "raw"
    bad.mkdir(parents=True)
    for name in data.FILES:
        (bad / name).write_bytes(b"\0\0\x08\x01\0\0\0\x01\x07")
    monkeypatch.setenv("DL_CH2_DATA", str(tmp_path / "bad"))
    data.load.cache_clear()
    for i, (submission, root) in enumerate([(names, "bad"), (other, "bad")]):
        scratch = tmp_path / f"scratch{i}"
        scratch.mkdir()
        _serve_mnist(scratch, submission)
        assert not (scratch / SERVED_MNIST).exists(), root
    data.load.cache_clear()
    monkeypatch.delenv("DL_CH2_DATA")
    if data.load() is None:
        pytest.skip("no verified MNIST here (`dl-ch2 data`): the served copy is not checked")
    scratch = tmp_path / "scratch-real"
    scratch.mkdir()
    _serve_mnist(scratch, names)
    (train_x, train_y), (test_x, test_y) = data.load()
    for name, want in zip(MNIST_ARRAYS, (train_x, train_y, test_x, test_y), strict=True):
        got = np.load(scratch / SERVED_MNIST / f"{name}.npy", allow_pickle=False)
        assert got.dtype == np.uint8 and np.array_equal(got, want), name
    assert int(train_y[0]) == 5 and train_x.shape == (60000, 28, 28)  # MNIST's first label


def test_a_worker_as_the_graders_user_runs_numpys_blas_on_one_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """As the unprivileged worker does (OMP_NUM_THREADS=1): the NumPy reference's grade
    trained the first example with two BLAS threads spinning against the pytest process."""
    from conformance.grading.sandbox import worker_env

    monkeypatch.delenv("OPENBLAS_NUM_THREADS", raising=False)
    monkeypatch.setenv("DL_CH2_GRADE_SECRET", "s3cret")
    for trusted in (True, False):
        env = worker_env(trusted)
        assert env["OPENBLAS_NUM_THREADS"] == "1" and "DL_CH2_GRADE_SECRET" not in env
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "2")  # a grader's own choice stands
    assert worker_env(True)["OPENBLAS_NUM_THREADS"] == "2"


def test_a_dtype_the_adapter_lacks_is_a_one_line_usage_error(tmp_path: Path) -> None:
    """Found by the grade's own worker now (no probe): still exit 2, one line, no card."""
    student = (ROOT / "conformance" / "examples" / "student_numpy.py").read_text()
    path = tmp_path / "only64.py"
    path.write_text(student + "\nclass Only64(StudentAdapter):\n    dtypes = ('float64',)\n"
                    "ADAPTER = Only64()\n")  # fmt: skip
    out = subprocess.run([sys.executable, "-m", "conformance", "grade", str(path), "--dtype",
                          "float32"], capture_output=True, text=True, cwd=tmp_path, timeout=300,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})  # fmt: skip
    assert out.returncode == 2, out.stderr[-2000:]
    assert out.stderr.strip().splitlines() == [
        "conformance grade: error: --dtype float32: the adapter student-numpy declares "
        "dtypes ['float64'] only"
    ]
    assert "report card" not in out.stdout
