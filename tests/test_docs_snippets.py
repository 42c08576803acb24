"""The Python snippets of README.md and docs/pytorch.md run as written (issue 23).

MNIST is replaced by a small synthetic stand-in of the same shapes and dtypes, so the
snippets' own lines (imports, names, calls, saving) are what is checked, in seconds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

import dl_ch2_tools.mnist
from dl_ch2 import build_naive_model

ROOT = Path(__file__).resolve().parents[1]


def _first_python_block(path: Path, after: str) -> str:
    text = path.read_text(encoding="utf-8").split(after, 1)[1]
    return text.split("```python\n", 1)[1].split("```", 1)[0]


def _small_mnist_tensors(
    root: object = None, *, device: object = None, download: bool = True
) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 10, (300,), generator=g)
    images = torch.rand(300, 784, generator=g) * 0.1
    images[torch.arange(300), labels * 70] = 1.0  # one bright pixel per class
    dev = torch.device("cpu") if device is None else torch.device(str(device))
    return images[:200].to(dev), labels[:200].to(dev), images[200:].to(dev), labels[200:].to(dev)


@pytest.mark.parametrize(
    ("page", "section"),
    [("README.md", "## Using the port in PyTorch"), ("docs/pytorch.md", "# Using the port")],
)
def test_the_pytorch_snippet_runs_as_written(
    page: str,
    section: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(dl_ch2_tools.mnist, "mnist_tensors", _small_mnist_tensors)
    monkeypatch.chdir(tmp_path)
    code = _first_python_block(ROOT / page, section)
    namespace: dict[str, Any] = {}
    exec(compile(code, page, "exec"), namespace)
    out = capsys.readouterr().out
    assert "Epoch 9" in out and "loss at batch 0:" in out and "accuracy: " in out
    if page == "README.md":  # it saves the weights: they load back into the same model
        restored = build_naive_model()
        restored.load_state_dict(load_file(tmp_path / "naive.safetensors"))
        for a, b in zip(namespace["model"].weights, restored.weights, strict=True):
            assert torch.equal(a.detach(), b.detach())
