"""The grading product's layout: its own subpackage, no import cycle, a worker that needs
nothing of the grader.

Every import counts: at module level, inside functions, under ``TYPE_CHECKING``.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SUITE = ROOT / "conformance"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The modules of ``modules`` that ``path`` imports, anywhere in the file."""
    me = module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            names = [base, *(f"{base}.{a.name}" for a in node.names)]
        for name in names:
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name and name != me:
                found.add(name)
    return found


def graph(folder: Path) -> dict[str, set[str]]:
    files = [p for p in folder.rglob("*.py") if "__pycache__" not in p.parts]
    modules = {module_name(p) for p in files}
    return {module_name(p): imports_of(p, modules) - {module_name(p)} for p in files}


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in g.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def test_the_cycle_finder_finds_a_planted_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_import_reader_sees_imports_in_functions_and_type_checking(tmp_path: Path) -> None:
    pkg = ROOT / "conformance" / "grading"
    fake = pkg / "_probe_for_test.py"
    fake.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from conformance import plugin\n"
        "def f():\n    from . import wire\n    import conformance.report\n"
    )
    try:
        modules = {module_name(p) for p in SUITE.rglob("*.py")}
        assert imports_of(fake, modules) == {
            "conformance",
            "conformance.plugin",
            "conformance.grading",
            "conformance.grading.wire",
            "conformance.report",
        }
    finally:
        fake.unlink()


def test_no_import_cycle_in_the_suite_or_its_grading_package() -> None:
    assert cycles(graph(SUITE)) == []


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

    allowed = {"numpy", "wire", "curves", "__future__"} | set(sys.stdlib_module_names)
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
