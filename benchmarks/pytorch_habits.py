"""Issue 28's numbers: ordinary PyTorch models through ``fit`` against a plain PyTorch loop.

Usage: python benchmarks/pytorch_habits.py [--n 8192] [--epochs 2] [--seed 0] [--out FILE]

On the first ``--n`` MNIST training images, in order, batches of 128, Adam(lr=1e-3), each
model trained twice from the same initial weights (``torch.manual_seed(seed)``): once by
``fit`` and once by the plain loop (``model.train()``, forward, ``loss.backward()``,
``optimizer.step()``; ``model.eval()`` and ``torch.inference_mode()`` to evaluate). Prints
the test accuracy (10,000 test images) of each; writes them as JSON with ``--out``. A report,
not a test: the tests (tests/test_pytorch_habits.py) check the same habits on small data.
"""

from __future__ import annotations

import argparse
import copy
import inspect
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from dl_ch2 import evaluate, fit
from dl_ch2_tools.mnist import mnist_tensors

NEW_API = "loss_fn" in inspect.signature(fit).parameters


def book_loss_plain(p: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The book's loss on probabilities, in plain torch ops: clip, log, cross-entropy."""
    return F.cross_entropy(torch.log(p.clamp(1e-7, 1 - 1e-7)), y)


MODELS: dict[str, Callable[[], nn.Module]] = {
    "logits": lambda: nn.Sequential(nn.Linear(784, 64), nn.ReLU(), nn.Linear(64, 10)),
    "softmax": lambda: nn.Sequential(
        nn.Linear(784, 64), nn.ReLU(), nn.Linear(64, 10), nn.Softmax(dim=1)
    ),
    "batchnorm": lambda: nn.Sequential(
        nn.Linear(784, 64), nn.BatchNorm1d(64), nn.ReLU(), nn.Linear(64, 10)
    ),
    "dropout": lambda: nn.Sequential(
        nn.Linear(784, 64), nn.ReLU(), nn.Dropout(0.5), nn.Linear(64, 10)
    ),
}


def plain_loop(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    epochs: int,
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    autocast: bool = False,
) -> None:
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    for _ in range(epochs):
        for k in range(0, len(x), 128):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                value = loss(model(x[k : k + 128]), y[k : k + 128])
            opt.zero_grad()
            value.backward()
            opt.step()


def plain_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    with torch.inference_mode():
        return float((model(x).argmax(1) == y).double().mean())


def via_fit(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int, logits: bool, **kw: Any
) -> str | None:
    """Train with fit; the refusal's message if it refuses, else None."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    extra: dict[str, Any] = {"loss_fn": "from_logits"} if logits and NEW_API else {}
    try:
        fit(
            model,
            x,
            y,
            epochs=epochs,
            batch_size=128,
            optimizer=opt,
            print_fn=None,
            progress=False,
            **extra,
            **kw,
        )
    except (ValueError, RuntimeError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=8192)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    x, y, tx, ty = mnist_tensors()
    x, y = x[: args.n], y[: args.n]
    rows: dict[str, Any] = {"torch": torch.__version__, "new_api": NEW_API}

    def pair(name: str, kind: str, logits: bool, autocast: bool = False) -> None:
        torch.manual_seed(args.seed)
        a = MODELS[kind]()
        b = copy.deepcopy(a)
        start = time.perf_counter()
        torch.manual_seed(args.seed + 1)  # dropout's masks: the same stream for both
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            refused = via_fit(a, x, y, args.epochs, logits)
        fit_acc = None if refused else evaluate(a, tx, ty)
        torch.manual_seed(args.seed + 1)
        plain_loop(b, x, y, args.epochs, F.cross_entropy if logits else book_loss_plain, autocast)
        rows[name] = {
            "fit": fit_acc,
            "plain": plain_accuracy(b, tx, ty),
            "refused": refused and refused[:300],
            "seconds": round(time.perf_counter() - start, 1),
        }
        print(name, json.dumps(rows[name]))

    # the logits model under the default loss (no loss_fn): refused, or how it trains
    torch.manual_seed(args.seed)
    m = MODELS["logits"]()
    refused = via_fit(m, x, y, args.epochs, logits=False)
    rows["logits_default_loss"] = {
        "refused": refused and refused[:300],
        "fit": None if refused else evaluate(m, tx, ty),
    }
    print("logits_default_loss", json.dumps(rows["logits_default_loss"]))
    pair("logits", "logits", logits=True)
    pair("softmax_fp32", "softmax", logits=False)
    pair("softmax_bf16_autocast", "softmax", logits=False, autocast=True)
    pair("batchnorm", "batchnorm", logits=True)
    pair("dropout", "dropout", logits=True)
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
