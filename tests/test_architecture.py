"""The project's architecture, checked on its source (issue 11, items 2 and 4).

1. No private torch or NumPy internals anywhere in ``dl_ch2/``, ``dl_ch2_tools/`` or
   ``conformance/``: no
   attribute access or import of a name starting with exactly one underscore from torch or
   NumPy (``torch._foreach_add_``, ``np._core``, ``from torch._dynamo import x``,
   ``getattr(torch, "_x")``), no ``torch.ops``, and no hook registries on any object
   (``m._forward_hooks``, ``opt._optimizer_step_pre_hooks``, ``_global_*_hooks``, ...).
   Any torch or NumPy release may change those; the public API is the contract.

   The one exception is named in :data:`EXEMPTIONS`: the MNIST unpickler in
   ``dl_ch2_tools/mnist.py`` must hand NumPy's array reconstructor to ``pickle`` (that is
   what a pickled ``ndarray`` names), so it imports ``numpy._core.multiarray._reconstruct``
   (``numpy.core.multiarray._reconstruct`` before NumPy 2). Its allow-list spells those
   names as data strings, which the checker does not read; the two imports are exempt by
   file and by full name, nowhere else, and the exemption must stay in use.

2. Layers, three packages and one direction: the tooling (``dl_ch2_tools``) imports the
   port (``dl_ch2``) and the suite (``conformance``); the suite imports the port only
   through its torch adapter; the port imports neither. The tooling imports the suite at
   import time only for ``conformance.atomic`` (the one atomic writer, standard library
   only), and the rest of the suite only inside the functions that grade, train
   ``--backend numpy`` or benchmark the reference. ``import dl_ch2`` and every chapter
   module leaves no suite and no tooling module loaded, checked in a fresh interpreter.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PRIVATE_ROOTS = frozenset({"torch", "numpy"})

#: (file relative to the repository root, the full dotted name) the checker lets through.
EXEMPTIONS: frozenset[tuple[str, str]] = frozenset(
    {
        ("dl_ch2_tools/mnist.py", "numpy._core.multiarray._reconstruct"),
        ("dl_ch2_tools/mnist.py", "numpy.core.multiarray._reconstruct"),
    }
)

#: torch's hook registries, on modules, tensors, optimizers and the global ones:
#: ``_forward_hooks``, ``_backward_pre_hooks``, ``_optimizer_step_post_hooks``,
#: ``_post_accumulate_grad_hooks``, ``_global_forward_hooks``, ``_state_dict_hooks``...
HOOK_REGISTRY = re.compile(r"^_[A-Za-z0-9]\w*hooks$")

_ATTRIBUTE_BUILTINS = frozenset({"getattr", "hasattr", "setattr", "delattr"})
_IMPORT_CALLS = frozenset({"import_module", "__import__"})


@dataclass(frozen=True)
class Violation:
    path: str
    line: int
    name: str
    rule: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.name} ({self.rule})"


def _private(name: str) -> bool:
    """Exactly one leading underscore: ``_core`` yes, ``__version__`` no."""
    return name.startswith("_") and not name.startswith("__")


def _module_rule(dotted: str) -> str | None:
    """Why importing ``dotted`` (a module or ``module.name``) is refused, or None."""
    parts = dotted.split(".")
    if parts[0] not in PRIVATE_ROOTS:
        return None
    if parts[0] == "torch" and len(parts) > 1 and parts[1] == "ops":
        return "torch.ops"
    if any(_private(p) for p in parts[1:]):
        return f"private {parts[0]} name"
    return None


class _Checker(ast.NodeVisitor):
    def __init__(self, path: str) -> None:
        self.path = path
        self.aliases: dict[str, str] = {}
        self.found: list[Violation] = []

    def _add(self, node: ast.AST, name: str, rule: str) -> None:
        self.found.append(Violation(self.path, getattr(node, "lineno", 0), name, rule))

    def _resolve(self, node: ast.expr) -> str | None:
        """The dotted torch/NumPy name an expression stands for, or None.

        Follows aliases (``np``, ``F``, ``from torch import nn``), attributes, calls and
        subscripts, so ``torch.zeros(3)._version`` resolves to ``torch.zeros()._version``.
        """
        if isinstance(node, ast.Name):
            return self.aliases.get(node.id)
        if isinstance(node, ast.Attribute):
            base = self._resolve(node.value)
            return None if base is None else f"{base}.{node.attr}"
        if isinstance(node, ast.Call):
            base = self._resolve(node.func)
            return None if base is None else f"{base}()"
        if isinstance(node, ast.Subscript):
            base = self._resolve(node.value)
            return None if base is None else f"{base}[]"
        return None

    def _attribute(self, node: ast.AST, base: str | None, attr: str) -> None:
        if HOOK_REGISTRY.match(attr):
            self._add(node, attr if base is None else f"{base}.{attr}", "hook registry")
        elif base is not None and _private(attr):
            self._add(node, f"{base}.{attr}", f"private {base.split('.')[0]} name")
        elif base == "torch" and attr == "ops":
            self._add(node, "torch.ops", "torch.ops")

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            root = alias.name.split(".")[0]
            if root in PRIVATE_ROOTS:
                self.aliases[alias.asname or root] = alias.name if alias.asname else root
                rule = _module_rule(alias.name)
                if rule:
                    self._add(node, alias.name, rule)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        module = node.module or ""
        if node.level or module.split(".")[0] not in PRIVATE_ROOTS:
            return
        for alias in node.names:
            full = f"{module}.{alias.name}"
            self.aliases[alias.asname or alias.name] = full
            rule = _module_rule(full)
            if rule:
                self._add(node, full, rule)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        self._attribute(node, self._resolve(node.value), node.attr)
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        fname = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
        args = node.args
        if fname in _ATTRIBUTE_BUILTINS and len(args) >= 2:
            name = args[1]
            if isinstance(name, ast.Constant) and isinstance(name.value, str):
                self._attribute(node, self._resolve(args[0]), name.value)
        if fname in _IMPORT_CALLS and args:
            target = args[0]
            if isinstance(target, ast.Constant) and isinstance(target.value, str):
                rule = _module_rule(target.value)
                if rule:
                    self._add(node, target.value, rule)
        self.generic_visit(node)


def private_uses(source: str, path: str = "<snippet>") -> list[Violation]:
    """Every use of private torch/NumPy internals in ``source``, in line order.

    Aliases are collected first (from every import in the file, any scope), so an import
    inside a function still marks its name as torch's or NumPy's.
    """
    tree = ast.parse(source, filename=path)
    checker = _Checker(path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            checker.visit(node)
    checker.found.clear()
    checker.visit(tree)
    return sorted(checker.found, key=lambda v: (v.line, v.name))


def _sources(*folders: str) -> list[Path]:
    files = sorted(p for folder in folders for p in (ROOT / folder).rglob("*.py"))
    assert files, f"no Python files under {folders} in {ROOT}"
    return files


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


# --- the checker itself ---------------------------------------------------------------


def _names(source: str) -> list[str]:
    return [v.name for v in private_uses(textwrap.dedent(source))]


def test_checker_flags_a_private_torch_function() -> None:
    src = """
        import torch
        def step(ws, gs):
            torch._foreach_add_(ws, gs, alpha=-0.1)
    """
    assert _names(src) == ["torch._foreach_add_"]


def test_checker_flags_numpy_private_modules_through_an_alias() -> None:
    assert _names("import numpy as np\nx = np._core.multiarray\n") == ["numpy._core"]
    assert _names("import numpy._core.multiarray\n") == ["numpy._core.multiarray"]
    assert _names("from numpy._core import multiarray\n") == ["numpy._core.multiarray"]


def test_checker_flags_private_imports_from_torch() -> None:
    assert _names("from torch._dynamo import config\n") == ["torch._dynamo.config"]
    assert _names("from torch import _C\n") == ["torch._C"]
    assert _names("import importlib\nimportlib.import_module('torch._inductor')\n") == [
        "torch._inductor"
    ]


def test_checker_flags_getattr_with_a_private_name() -> None:
    assert _names('import torch\nf = getattr(torch, "_x")\n') == ["torch._x"]
    assert _names('import torch\nhasattr(torch.optim, "_functional")\n') == [
        "torch.optim._functional"
    ]


def test_checker_flags_torch_ops() -> None:
    src = "import torch\ndz = torch.ops.aten.threshold_backward(da, z, 0)\n"
    assert _names(src) == ["torch.ops"]
    assert _names("from torch import ops\n") == ["torch.ops"]
    assert _names("from torch.ops import aten\n") == ["torch.ops.aten"]


def test_checker_flags_hook_registries_on_any_object() -> None:
    assert _names("if m._forward_hooks:\n    pass\n") == ["_forward_hooks"]
    assert _names("getattr(p, '_post_accumulate_grad_hooks', None)\n") == [
        "_post_accumulate_grad_hooks"
    ]
    src = """
        from torch.nn.modules import module as g
        from torch.optim import optimizer as o
        hooks = (g._global_forward_hooks, opt._optimizer_step_pre_hooks,
                 o._global_optimizer_post_hooks, m._backward_pre_hooks)
    """
    assert sorted(_names(src)) == [
        "_backward_pre_hooks",
        "_optimizer_step_pre_hooks",
        "torch.nn.modules.module._global_forward_hooks",
        "torch.optim.optimizer._global_optimizer_post_hooks",
    ]


def test_checker_follows_calls_and_from_imports() -> None:
    assert _names("import torch\nv = torch.zeros(3)._version\n") == ["torch.zeros()._version"]
    assert _names("from torch import nn\nnn.Linear(2, 2)._parameters\n") == [
        "torch.nn.Linear()._parameters"
    ]
    assert _names("import torch.nn.functional as F\nF._canonical_mask\n") == [
        "torch.nn.functional._canonical_mask"
    ]


def test_checker_passes_public_code() -> None:
    src = """
        from __future__ import annotations
        import numpy as np
        import torch
        import torch.nn.functional as F
        from torch import nn

        class Layer(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self._cache = None          # the project's own private names are fine
                self.lin = nn.Linear(2, 2)

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                return F.relu(self.lin(x)) + self._cache

        def public(name: str) -> object:
            h = nn.Linear(2, 2).register_forward_hook(lambda *a: None)
            h.remove()
            torch.compiler.reset()
            print(torch.__version__, np.__version__, np.core)
            allow = {("numpy._core.multiarray", "_reconstruct")}   # data strings
            return getattr(np, name), allow, torch.autograd.grad, np._private_looking_var
    """
    # the last name is the one private access in the snippet: public code is otherwise clean
    assert _names(src) == ["numpy._private_looking_var"]
    assert _names(src.replace(", np._private_looking_var", "")) == []


def test_the_mnist_exemption_is_by_file_and_full_name() -> None:
    src = "from numpy._core.multiarray import _reconstruct\n"
    found = private_uses(src, "dl_ch2_tools/mnist.py")
    assert [(v.path, v.name) for v in found] == [
        ("dl_ch2_tools/mnist.py", "numpy._core.multiarray._reconstruct")
    ]
    assert (found[0].path, found[0].name) in EXEMPTIONS
    for v in private_uses(src, "dl_ch2/training_loop.py"):
        assert (v.path, v.name) not in EXEMPTIONS
    other = private_uses("from numpy._core.multiarray import scalar\n", "dl_ch2_tools/mnist.py")
    assert [(v.path, v.name) in EXEMPTIONS for v in other] == [False]


# --- the repository -------------------------------------------------------------------


def test_no_private_torch_or_numpy_internals_in_any_package() -> None:
    found: list[Violation] = []
    for path in _sources("dl_ch2", "dl_ch2_tools", "conformance"):
        found += private_uses(path.read_text(encoding="utf-8"), _rel(path))
    used = {(v.path, v.name) for v in found} & EXEMPTIONS
    bad = [v for v in found if (v.path, v.name) not in EXEMPTIONS]
    assert not bad, "private torch/NumPy internals:\n" + "\n".join(map(str, bad))
    assert used == EXEMPTIONS, f"stale exemptions, remove them: {sorted(EXEMPTIONS - used)}"


def _imports(tree: ast.AST) -> list[tuple[int, str, ast.stmt]]:
    """(line, module name, node) of every import statement in ``tree``, in line order."""
    out: list[tuple[int, str, ast.stmt]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name, node) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: within dl_ch2 (the only package these rules read so)
                base = f"dl_ch2.{node.module}" if node.module else "dl_ch2"
            else:
                base = node.module or ""
            out += [(node.lineno, f"{base}.{a.name}", node) for a in node.names]
    return sorted(out, key=lambda t: t[0])


def _type_checking_blocks(tree: ast.Module) -> set[ast.stmt]:
    """Statements under a module-level ``if TYPE_CHECKING:``."""
    inside: set[ast.stmt] = set()
    for node in tree.body:
        if isinstance(node, ast.If) and ast.unparse(node.test) in {
            "TYPE_CHECKING",
            "typing.TYPE_CHECKING",
        }:
            inside |= {n for n in ast.walk(node) if isinstance(n, ast.stmt)}
    return inside


def _under(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def chapter_import_violations(path: str, source: str) -> list[str]:
    """A port module (``dl_ch2/*.py``) importing the suite or the tooling."""
    return [
        f"{path}:{line}: imports {name}"
        for line, name, _ in _imports(ast.parse(source))
        if _under(name, "conformance") or _under(name, "dl_ch2_tools")
    ]


#: The one suite module the tooling may import at import time: the shared atomic writer.
TOOLS_MAY_IMPORT = "conformance.atomic"


def tools_import_violations(path: str, source: str) -> list[str]:
    """A tool importing the suite, other than its atomic writer, at import time."""
    tree = ast.parse(source)
    in_functions = {
        n
        for f in ast.walk(tree)
        if isinstance(f, ast.FunctionDef | ast.AsyncFunctionDef)
        for n in ast.walk(f)
    }
    return [
        f"{path}:{line}: imports {name} at import time"
        for line, name, node in _imports(tree)
        if _under(name, "conformance")
        and not _under(name, TOOLS_MAY_IMPORT)
        and node not in in_functions
    ]


#: The suite's one way into the port.
SUITE_ADAPTER = "conformance/adapters/torch_port.py"


def suite_import_violations(path: str, source: str) -> list[str]:
    """A suite module importing the tooling, or the port other than in the torch adapter."""
    return [
        f"{path}:{line}: imports {name}"
        for line, name, _ in _imports(ast.parse(source))
        if _under(name, "dl_ch2_tools") or (_under(name, "dl_ch2") and path != SUITE_ADAPTER)
    ]


def test_layer_checks_flag_planted_imports() -> None:
    planted = "import conformance.reference as ref\nfrom dl_ch2_tools import mnist\n"
    assert chapter_import_violations("dl_ch2/fit.py", planted) == [
        "dl_ch2/fit.py:1: imports conformance.reference",
        "dl_ch2/fit.py:2: imports dl_ch2_tools.mnist",
    ]
    facade = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from dl_ch2_tools.mnist import load_mnist\n"
    )
    assert chapter_import_violations("dl_ch2/__init__.py", facade) == [
        "dl_ch2/__init__.py:3: imports dl_ch2_tools.mnist.load_mnist"
    ]
    tool = (
        "import conformance\n"
        "class A:\n    from conformance import reference\n"
        "def grade():\n    from conformance.__main__ import grade\n"
        "from conformance.atomic import atomic_write\n"
        "from conformance import atomic\n"
    )
    assert tools_import_violations("dl_ch2_tools/cli.py", tool) == [
        "dl_ch2_tools/cli.py:1: imports conformance at import time",
        "dl_ch2_tools/cli.py:3: imports conformance.reference at import time",
    ]
    suite = (
        "import dl_ch2\nfrom conformance.atomic import atomic_write\n"
        "from dl_ch2_tools.mnist import load_mnist\n"
    )
    assert suite_import_violations("conformance/plugin.py", suite) == [
        "conformance/plugin.py:1: imports dl_ch2",
        "conformance/plugin.py:3: imports dl_ch2_tools.mnist.load_mnist",
    ]
    assert suite_import_violations(SUITE_ADAPTER, suite) == [
        f"{SUITE_ADAPTER}:3: imports dl_ch2_tools.mnist.load_mnist"
    ]


def _check_all(folder: str, check: Callable[[str, str], list[str]], pattern: str) -> list[str]:
    paths = sorted((ROOT / folder).glob(pattern))
    assert paths, f"no files {pattern} under {folder}"
    return [msg for p in paths for msg in check(_rel(p), p.read_text(encoding="utf-8"))]


def test_chapter_modules_import_neither_the_suite_nor_the_tools() -> None:
    bad = _check_all("dl_ch2", chapter_import_violations, "*.py")
    assert not bad, "the chapter's modules must not import these:\n" + "\n".join(bad)


def test_tools_import_the_suite_only_inside_functions_but_its_atomic_writer() -> None:
    bad = _check_all("dl_ch2_tools", tools_import_violations, "**/*.py")
    assert not bad, "\n".join(bad)


def test_the_suite_reaches_the_port_only_through_its_adapter() -> None:
    bad = _check_all("conformance", suite_import_violations, "**/*.py")
    assert not bad, "only the torch adapter may import dl_ch2, nothing dl_ch2_tools:\n" + "\n".join(
        bad
    )


def test_importing_the_port_leaves_the_suite_and_the_tools_unloaded() -> None:
    """In a fresh interpreter: the package, then every chapter module, then every tool."""
    chapter = sorted(f"dl_ch2.{p.stem}" for p in (ROOT / "dl_ch2").glob("*.py"))
    tools = sorted(f"dl_ch2_tools.{p.stem}" for p in (ROOT / "dl_ch2_tools").glob("*.py"))
    tools.remove("dl_ch2_tools.__main__")  # running it is `python -m dl_ch2_tools`
    assert "dl_ch2.training_loop" in chapter and "dl_ch2_tools.cli" in tools
    code = textwrap.dedent(
        f"""
        import importlib, sys
        def loaded():
            return sorted(m for m in sys.modules if m.split('.')[0] in
                          ('conformance', 'dl_ch2_tools'))
        import dl_ch2
        print(loaded())
        for name in {chapter!r}:
            importlib.import_module(name)
        print(loaded())
        for name in {tools!r}:
            importlib.import_module(name)
        print([m for m in loaded() if m.startswith('conformance')])
        """
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, env=env, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.split("\n")
    assert lines[:2] == ["[]", "[]"], proc.stdout
    # the tools load the suite's atomic writer, nothing else of it, until a function asks
    assert lines[2] == "['conformance', 'conformance.atomic']", proc.stdout


# --- no import cycles (issue 23) ------------------------------------------------------


def import_graph(files: dict[str, str]) -> dict[str, set[str]]:
    """Module -> the modules of the same set it imports, every import counted.

    ``files`` maps dotted module names (``dl_ch2.fit``, ``dl_ch2`` for a package's
    ``__init__``) to their source. Imports at module level, inside functions and under
    ``if TYPE_CHECKING:`` all count; ``from dl_ch2.x import y`` is an edge to ``dl_ch2.x.y``
    when that is a module of the set, else to ``dl_ch2.x``.
    """
    graph: dict[str, set[str]] = {name: set() for name in files}
    for name, source in files.items():
        for _, imported, _ in _imports(ast.parse(source)):
            parts = imported.split(".")
            for k in range(len(parts), 0, -1):
                target = ".".join(parts[:k])
                if target in files:
                    if target != name:
                        graph[name].add(target)
                    break
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component: list[str] = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def _package_sources(package: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for path in _sources(package):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path.read_text(encoding="utf-8")
    return out


def test_cycle_check_finds_planted_cycles_of_every_kind() -> None:
    files = {
        "p": "",
        "p.a": "from p.b import f\n",
        "p.b": "def g():\n    from p.c import h\n",  # a function-level import counts
        "p.c": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from p.a import x\n",
        "p.d": "import p.e\n",
        "p.e": "from p import d\n",  # `from p import d` names the module p.d
        "p.f": "import p.a\n",  # imports into a cycle, is not in one
    }
    graph = import_graph(files)
    assert graph["p.e"] == {"p.d"} and graph["p.f"] == {"p.a"}
    assert import_cycles(graph) == [["p.a", "p.b", "p.c"], ["p.d", "p.e"]]
    del files["p.c"]
    assert import_cycles(import_graph(files)) == [["p.d", "p.e"]]


@pytest.mark.parametrize("package", ["dl_ch2", "dl_ch2_tools", "conformance"])
def test_no_import_cycles_in_the_port_the_tools_or_the_suite(package: str) -> None:
    graph = import_graph(_package_sources(package))
    assert len(graph) > 3
    cycles = import_cycles(graph)
    assert not cycles, "import cycles (TYPE_CHECKING and function-level imports count):\n" + (
        "\n".join(" <-> ".join(c) for c in cycles)
    )


# --- short functions in the port (issue 23) ---------------------------------------------

#: The longest a function of dl_ch2 may be, signature and docstring included, and the
#: longest ``fit``'s body may be (its statements, without the docstring).
MAX_FUNCTION_LINES, MAX_FIT_BODY_LINES = 60, 40


def function_lengths(source: str) -> dict[str, tuple[int, int]]:
    """``name -> (lines from def to end, lines of the body without its docstring)``."""
    out: dict[str, tuple[int, int]] = {}
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                body = body[1:]
            end = node.end_lineno or node.lineno
            first = body[0].lineno if body else end
            out[f"{node.name}:{node.lineno}"] = (end - node.lineno + 1, end - first + 1)
    return out


def test_function_lengths_count_from_def_and_skip_the_docstring() -> None:
    src = 'def f(\n    a: int,\n) -> int:\n    """Doc.\n\n    More.\n    """\n'
    src += "    b = a\n    return b\n"
    assert function_lengths(src) == {"f:1": (9, 2)}


def test_the_port_has_short_functions_and_fit_reads_like_the_notebook() -> None:
    lengths = {
        f"{_rel(p)}:{name}": n
        for p in _sources("dl_ch2")
        for name, n in function_lengths(p.read_text(encoding="utf-8")).items()
    }
    long = {k: total for k, (total, _) in lengths.items() if total > MAX_FUNCTION_LINES}
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines: {long}"
    (fit_body,) = [body for k, (_, body) in lengths.items() if "training_loop.py:fit:" in k]
    assert fit_body <= MAX_FIT_BODY_LINES


#: Functions still over the limit, each being split by a concurrent change (issue 27.8):
#: ``path:name``. An entry whose function is short again must be removed (the test says so).
LONG_FUNCTIONS_BEING_SPLIT: set[str] = set()


def test_the_tools_and_the_suite_have_short_functions_too() -> None:
    """The guide's rule for every package: no function over MAX_FUNCTION_LINES lines."""
    long = {
        f"{_rel(p)}:{name.split(':')[0]}": total
        for p in _sources("dl_ch2_tools", "conformance")
        for name, (total, _) in function_lengths(p.read_text(encoding="utf-8")).items()
        if total > MAX_FUNCTION_LINES
    }
    unlisted = {k: n for k, n in long.items() if k not in LONG_FUNCTIONS_BEING_SPLIT}
    assert not unlisted, f"functions over {MAX_FUNCTION_LINES} lines: {unlisted}"
    stale = LONG_FUNCTIONS_BEING_SPLIT - set(long)
    assert not stale, f"short now: remove from LONG_FUNCTIONS_BEING_SPLIT: {sorted(stale)}"
