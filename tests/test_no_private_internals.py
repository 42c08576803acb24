"""No private torch/NumPy internals anywhere in dl_ch2 or conformance (issue 11).

Walks the AST of every module and fails on: an attribute or import of a name starting with
one underscore reached from torch or numpy (``torch._foreach_add_``, ``np._core``,
``from torch._dynamo import ...``, ``getattr(torch, "_...")``); ``torch.ops``; and module
hook registries (``_forward_hooks``, ``_backward_hooks``, ...) read on anything. The one
exception is the MNIST unpickler's allow-list of NumPy's array reconstructor, which names
``numpy._core.multiarray._reconstruct`` because that is what the pickle holds.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("torch", "numpy")
HOOK_REGISTRIES = {
    "_forward_hooks",
    "_forward_pre_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_pre_hooks_with_kwargs",
    "_forward_hooks_always_called",
    "_backward_hooks",
    "_backward_pre_hooks",
    "_state_dict_hooks",
    "_state_dict_pre_hooks",
    "_load_state_dict_pre_hooks",
    "_load_state_dict_post_hooks",
    "_optimizer_step_pre_hooks",
    "_optimizer_step_post_hooks",
    "_post_accumulate_grad_hooks",
    "_global_forward_hooks",
    "_global_forward_pre_hooks",
    "_global_backward_hooks",
    "_global_backward_pre_hooks",
    "_global_optimizer_pre_hooks",
    "_global_optimizer_post_hooks",
}
#: (file, what) pairs allowed, with the reason in the module docstring above.
ALLOWED = {
    ("dl_ch2/tools/mnist.py", "numpy._core.multiarray"),
    ("dl_ch2/tools/mnist.py", "numpy._core.multiarray._reconstruct"),
    ("dl_ch2/tools/mnist.py", "numpy.core.multiarray._reconstruct"),  # NumPy < 2
}


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _dotted(node: ast.expr) -> list[str] | None:
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        return [node.id, *reversed(parts)]
    return None


def violations(source: str, filename: str = "<planted>") -> list[str]:
    """Every private torch/NumPy use in ``source``, as ``line: what``."""
    tree = ast.parse(source)
    aliases: dict[str, str] = {}  # local name -> dotted torch/numpy path
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] in PACKAGES:
                    aliases[a.asname or a.name.split(".")[0]] = (
                        a.name if a.asname else a.name.split(".")[0]
                    )
                    if any(_private(p) for p in a.name.split(".")):
                        found.append((node.lineno, a.name))
        elif (
            isinstance(node, ast.ImportFrom)
            and node.module
            and node.module.split(".")[0] in PACKAGES
        ):
            for a in node.names:
                full = f"{node.module}.{a.name}"
                aliases[a.asname or a.name] = full
                if any(_private(p) for p in full.split(".")):
                    found.append((node.lineno, full))
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            if node.attr in HOOK_REGISTRIES:
                found.append((node.lineno, node.attr))
                continue
            parts = _dotted(node)
            if parts is None or parts[0] not in aliases:
                continue
            full = [*aliases[parts[0]].split("."), *parts[1:]]
            if any(_private(p) for p in full) or full[:2] == ["torch", "ops"]:
                found.append((node.lineno, ".".join(full)))
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in {"getattr", "hasattr", "setattr"}
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
        ):
            target, name = node.args[0], node.args[1].value
            parts = _dotted(target)
            from_package = parts is not None and parts[0] in aliases
            if (from_package and _private(name)) or name in HOOK_REGISTRIES:
                found.append((node.lineno, f"{node.func.id}(..., {name!r})"))
    rel = filename
    return sorted({f"{rel}:{line}: {what}" for line, what in found if (rel, what) not in ALLOWED})


def _modules() -> list[Path]:
    return sorted(p for pkg in ("dl_ch2", "conformance") for p in (ROOT / pkg).rglob("*.py"))


def test_no_private_torch_or_numpy_internals_in_the_project() -> None:
    bad: list[str] = []
    for path in _modules():
        bad += violations(path.read_text(encoding="utf-8"), path.relative_to(ROOT).as_posix())
    assert bad == []


@pytest.mark.parametrize(
    "planted",
    [
        "import torch\ntorch._foreach_add_([], [])",
        "import torch as T\nT._fused_adam_",
        "import numpy as np\nnp._core.multiarray",
        "from torch import _dynamo",
        "from torch._dynamo import config",
        "import torch._inductor.config",
        "import torch\ntorch.ops.aten.threshold_backward",
        "from torch import nn\nnn.modules.module._global_forward_hooks",
        "def f(m):\n    return m._forward_hooks",
        "def f(p):\n    return getattr(p, '_post_accumulate_grad_hooks', None)",
        "import torch\ngetattr(torch, '_fused_adam_')",
        "def f(opt):\n    return opt._optimizer_step_pre_hooks",
    ],
)
def test_the_walker_catches_planted_internals(planted: str) -> None:
    assert violations(planted) != []


@pytest.mark.parametrize(
    "fine",
    [
        "import torch\ntorch.compiler.reset()\ntorch.nn.functional.relu",
        "import torch\nx = torch.zeros(1)\nx.__class__",
        "def f(m):\n    m.register_forward_hook(print)",
        "import numpy as np\nnp.random.default_rng(0)",
    ],
)
def test_the_walker_passes_public_code(fine: str) -> None:
    assert violations(fine) == []


def test_importing_dl_ch2_does_not_import_the_suite() -> None:
    code = (
        "import sys, dl_ch2, dl_ch2.training_loop, dl_ch2.first_example\n"
        "assert not any(m.startswith('conformance') for m in sys.modules), "
        "[m for m in sys.modules if m.startswith('conformance')]"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
