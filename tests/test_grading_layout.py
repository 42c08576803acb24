"""The grading product's layout: its own subpackage, and a worker that needs nothing of the
grader. (No import cycle in the suite: tests/test_architecture.py, every import counted.)
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SUITE = ROOT / "conformance"


def test_the_grading_product_lives_in_its_own_subpackage() -> None:
    grading = {p.stem for p in (SUITE / "grading").glob("*.py")}
    assert {"worker", "wire", "client", "sandbox", "runner", "rubric", "gradescope"} <= grading
    assert {"grade_all", "bundle", "cli", "launch"} <= grading
    suite = {p.stem for p in SUITE.glob("*.py")}
    assert not suite & {
        "runner",
        "rubric",
        "gradescope",
        "grade_all",
        "bundle",
        "classroom_cli",
        "starter",
    }


def test_the_worker_runs_from_a_copy_with_numpy_alone(tmp_path: Path) -> None:
    """What a worker runs of ours imports the standard library, numpy and its siblings only."""
    from conformance.grading.sandbox import RUNTIME_FILES

    allowed = {"numpy", "wire", "curves", "book_names", "cells", "__future__"} | set(
        sys.stdlib_module_names
    )
    for f in RUNTIME_FILES:
        tree = ast.parse(f.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                tops = {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and not node.level:
                tops = {(node.module or "").split(".")[0]}
            else:
                continue
            # the one package import is the type checkers' view, under `if __package__:`
            tops -= {"conformance"}
            assert tops <= allowed, (f.name, tops - allowed)
    for f in RUNTIME_FILES:
        (tmp_path / f.name).write_text(f.read_text())
    proc = subprocess.run(
        [sys.executable, "-I", str(tmp_path / "worker.py"), "--help"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert proc.returncode == 0 and "--adapter" in proc.stdout, proc.stderr
