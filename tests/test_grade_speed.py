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
    monkeypatch.setattr(cells, "DEMO_CELL_SECONDS", 0.1)
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
