"""The chapter's figures as PNGs (matplotlib, the ``plot`` extra).

- ``digits_grid``: sample MNIST digits with their labels (§2.1; torchvision's make_grid when
  installed);
- ``fourth_digit``: ``train_images[4]``, the 9 the book shows in §2.2.6;
- ``loss_curve``: the from-scratch model's loss per batch (§2.5.3);
- ``sgd_learning_rates``: SGD down a 1-D loss curve with a tiny, a reasonable and a too-large
  learning rate (§2.4.3, figure 2.12's story);
- ``momentum_local_global``: plain SGD stuck in a local minimum vs momentum reaching the
  global one (§2.4.3, figure 2.13);
- ``gradient_descent_2d``: gradient descent on a 2-D loss surface (§2.4.3, figure 2.14).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from conformance.atomic import atomic_path
from dl_ch2.gradients import sgd_path
from dl_ch2.momentum import local_global_curve, local_global_curve_grad

__all__ = [
    "FIGURE_SIZE_PX",
    "digits_grid",
    "fourth_digit",
    "gradient_descent_2d",
    "loss_curve",
    "make_all",
    "momentum_local_global",
    "sgd_learning_rates",
]

#: Every figure is saved at this size (width, height) in pixels.
FIGURE_SIZE_PX = (800, 600)
_DPI = 100


def _plt() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("figures need matplotlib: pip install 'dl-ch2[plot]'") from exc
    return plt


def _figure() -> tuple[Any, Any]:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(FIGURE_SIZE_PX[0] / _DPI, FIGURE_SIZE_PX[1] / _DPI), dpi=_DPI)
    return fig, ax


def _save(fig: Any, path: Path) -> Path:
    """Save atomically (temp file + rename) at exactly FIGURE_SIZE_PX."""
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=_DPI, format="png")
    finally:
        _plt().close(fig)
    return path


def digits_grid(images: np.ndarray, labels: np.ndarray, path: Path, n: int = 32) -> Path:
    """A grid of the first ``n`` digits with their labels."""
    n = min(n, len(images))
    cols = 8
    rows = -(-n // cols)
    fig, ax = _figure()
    try:
        import torch
        from torchvision.utils import make_grid  # type: ignore[import-untyped]

        grid = make_grid(
            torch.from_numpy(images[:n, None]).float() / 255, nrow=cols, padding=2, pad_value=1.0
        )[0].numpy()
    except Exception:  # torchvision absent or unusable: tile by hand
        grid = np.ones((rows * 30 + 2, cols * 30 + 2))
        for i in range(n):
            r, c = divmod(i, cols)
            grid[2 + 30 * r : 30 + 30 * r, 2 + 30 * c : 30 + 30 * c] = images[i] / 255
    ax.imshow(grid, cmap="binary_r")
    for i in range(n):
        r, c = divmod(i, cols)
        ax.text(2 + 30 * c + 1, 2 + 30 * r + 6, str(int(labels[i])), color="orange", fontsize=9)
    ax.set_axis_off()
    ax.set_title(f"The first {n} MNIST training digits and their labels")
    return _save(fig, path)


def fourth_digit(images: np.ndarray, labels: np.ndarray, path: Path) -> Path:
    """``train_images[4]`` shown with the book's binary colour map."""
    fig, ax = _figure()
    ax.imshow(images[4], cmap="binary")
    ax.set_title(f"train_images[4] (label {int(labels[4])})")
    return _save(fig, path)


def loss_curve(batch_losses: Sequence[Sequence[float]], path: Path) -> Path:
    """Per-batch training loss over all epochs, epoch boundaries marked."""
    fig, ax = _figure()
    flat = [v for epoch in batch_losses for v in epoch]
    ax.plot(np.arange(len(flat)), flat, lw=0.8)
    start = 0
    for epoch in batch_losses[:-1]:
        start += len(epoch)
        ax.axvline(start, color="grey", lw=0.5, ls=":")
    ax.set_xlabel("batch")
    ax.set_ylabel("loss")
    ax.set_title("From-scratch model: training loss per batch (SGD)")
    return _save(fig, path)


def sgd_learning_rates(path: Path) -> Path:
    """SGD on loss(w) = w**2 from w0 = 4 with three learning rates."""
    fig, ax = _figure()
    w = np.linspace(-6, 6, 400)
    ax.plot(w, w**2, color="black", lw=1, label="loss(w) = w²")
    for lr, colour, label in (
        (0.02, "tab:blue", "tiny: crawls"),
        (0.2, "tab:green", "reasonable: converges"),
        (1.05, "tab:red", "too large: diverges"),
    ):
        path_w = np.array(sgd_path(lambda v: 2 * v, 4.0, lr, 10))
        path_w = path_w[np.abs(path_w) < 6]
        ax.plot(path_w, path_w**2, "o-", color=colour, ms=4, label=f"lr={lr} ({label})")
    ax.set_xlabel("w")
    ax.set_ylabel("loss")
    ax.legend()
    ax.set_title("SGD down a 1-D loss curve, 10 steps")
    return _save(fig, path)


def momentum_local_global(path: Path) -> Path:
    """Plain SGD stops in the local minimum; momentum 0.9 rolls into the global one."""
    fig, ax = _figure()
    w = np.linspace(-2.1, 2.7, 400)
    ax.plot(w, [local_global_curve(v) for v in w], color="black", lw=1, label="loss(w)")
    for momentum, colour in ((0.0, "tab:red"), (0.9, "tab:blue")):
        p = np.array(sgd_path(local_global_curve_grad, 2.5, 0.01, 300, momentum=momentum))
        ax.plot(
            p,
            [local_global_curve(v) for v in p],
            ".-",
            color=colour,
            ms=3,
            lw=0.6,
            label=f"momentum={momentum}: ends at w={p[-1]:.2f}",
        )
    ax.set_xlabel("w")
    ax.set_ylabel("loss")
    ax.legend()
    ax.set_title("A local and a global minimum: SGD vs SGD with momentum (start w=2.5)")
    return _save(fig, path)


def gradient_descent_2d(path: Path) -> Path:
    """Gradient descent on an elongated quadratic bowl with a tilted valley."""
    fig, ax = _figure()
    a = np.array([[3.0, 1.0], [1.0, 1.0]])

    def loss(p: np.ndarray) -> np.ndarray:
        value: np.ndarray = 0.5 * np.einsum("...i,ij,...j->...", p, a, p)
        return value

    xs, ys = np.meshgrid(np.linspace(-3, 3, 200), np.linspace(-3, 3, 200))
    ax.contour(xs, ys, loss(np.stack([xs, ys], -1)), levels=20, cmap="viridis")
    p = np.array([-2.5, 2.5])
    steps = [p]
    for _ in range(30):
        p = p - 0.25 * (a @ p)
        steps.append(p)
    pts = np.array(steps)
    ax.plot(pts[:, 0], pts[:, 1], "o-", color="tab:red", ms=3, label="gradient descent, lr=0.25")
    ax.set_aspect("equal")
    ax.legend()
    ax.set_title("Gradient descent on a 2-D loss surface")
    return _save(fig, path)


def make_all(
    out: Path,
    images: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    batch_losses: Sequence[Sequence[float]] | None = None,
) -> list[Path]:
    """Write every figure that the given data allows into ``out``; returns the paths."""
    out = Path(out)
    paths = [
        sgd_learning_rates(out / "sgd_learning_rates.png"),
        momentum_local_global(out / "momentum_local_global.png"),
        gradient_descent_2d(out / "gradient_descent_2d.png"),
    ]
    if images is not None and labels is not None:
        paths.append(digits_grid(images, labels, out / "digits_grid.png"))
        paths.append(fourth_digit(images, labels, out / "train_images_4.png"))
    if batch_losses is not None:
        paths.append(loss_curve(batch_losses, out / "loss_curve.png"))
    return paths
