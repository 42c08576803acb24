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


def test_every_snippet_of_the_pytorch_page_runs_in_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 28: docs/pytorch.md shows each PyTorch habit in a snippet; all run as written."""
    monkeypatch.setattr(dl_ch2_tools.mnist, "mnist_tensors", _small_mnist_tensors)
    monkeypatch.chdir(tmp_path)
    text = (ROOT / "docs/pytorch.md").read_text(encoding="utf-8")
    blocks = [b.split("```", 1)[0] for b in text.split("```python\n")[1:]]
    assert len(blocks) >= 9
    namespace: dict[str, Any] = {}
    for i, code in enumerate(blocks):
        exec(compile(code, f"docs/pytorch.md (snippet {i})", "exec"), namespace)
    out = capsys.readouterr().out
    assert "not probabilities" in out and 'loss_fn="from_logits"' in out
    assert "learning_rate or optimizer, not both" in out
    assert "batchnorm + dropout: " in out
    assert out.rstrip().splitlines()[-1].startswith("History(epochs=10, batches_per_epoch=2")
