"""The chapter's figures as PNGs (matplotlib, the ``plot`` extra).

- ``digits_grid``: sample MNIST digits with their labels (§2.1; torchvision's make_grid when
  installed);
- ``fourth_digit``: ``train_images[4]``, the 9 the book shows in §2.2.6;
- ``loss_curve``: the from-scratch model's loss per batch (§2.5.3);
- ``sgd_learning_rates``: SGD down a 1-D loss curve with a tiny, a reasonable and a too-large
  learning rate (§2.4.3, figure 2.12's story);
- ``momentum_local_global``: plain SGD and the book's momentum rule at its own values
  (momentum 0.1) stuck in a local minimum, plain momentum 0.9 reaching the global one
  (§2.4.3, figure 2.13);
- ``gradient_descent_2d``: gradient descent on a 2-D loss surface (§2.4.3, figure 2.14);
- ``vector_addition``: the point A = [0.5, 1], its arrow, and A + B with B = [1, 0.25]
  (§2.3.5, figures 2.6-2.8);
- ``rotation``: a rotation as a dot product with R = [u, v] (§2.3.5);
- ``computation_graph``: §2.4.4's graph x1 = x * w, x2 = x1 + b, loss_val = abs(y_true -
  x2) at the book's values, with the backward pass's edge derivatives.

Without matplotlib, ``dl-ch2 figures`` says so in one line (``pip install 'dl-ch2[plot]'``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from conformance.atomic import atomic_path
from dl_ch2.gradients import ScalarGraph, sgd_path
from dl_ch2.momentum import local_global_curve, local_global_curve_grad, naive_momentum_update
from dl_ch2.tensor_operations import rotate, rotation_matrix, vector_add

__all__ = [
    "FIGURE_SIZE_PX",
    "PLOT_EXTRA_HINT",
    "computation_graph",
    "digits_grid",
    "fourth_digit",
    "gradient_descent_2d",
    "loss_curve",
    "make_all",
    "momentum_local_global",
    "momentum_paths",
    "rotation",
    "sgd_learning_rates",
    "vector_addition",
]

#: What to install for the figures (the CLI's one line, and ``_plt``'s error).
PLOT_EXTRA_HINT = (
    "the figures need matplotlib, which the plot extra installs: pip install 'dl-ch2[plot]'"
)

#: Every figure is saved at this size (width, height) in pixels.
FIGURE_SIZE_PX = (800, 600)
_DPI = 100


def _plt() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(PLOT_EXTRA_HINT) from exc
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


def momentum_paths(
    w0: float = 2.5, learning_rate: float = 0.01, steps: int = 300
) -> dict[str, list[float]]:
    """The three trajectories of the momentum figure, on ``local_global_curve``.

    ``sgd``: plain SGD; ``book``: the book's pseudocode at its own momentum, 0.1
    (``naive_momentum_update``: Keras' Nesterov rule); ``momentum``: plain momentum 0.9
    (Keras ``SGD(momentum=0.9)``, torch's ``SGD(momentum=0.9)``).
    """
    book, w, velocity = (
        [w0],
        torch.tensor(w0, dtype=torch.float64),
        torch.tensor(0.0, dtype=torch.float64),
    )
    for _ in range(steps):
        gradient = torch.tensor(local_global_curve_grad(float(w)), dtype=torch.float64)
        w, velocity = naive_momentum_update(w, gradient, velocity, learning_rate, 0.1)
        book.append(float(w))
    return {
        "sgd": sgd_path(local_global_curve_grad, w0, learning_rate, steps),
        "book": book,
        "momentum": sgd_path(local_global_curve_grad, w0, learning_rate, steps, momentum=0.9),
    }


def momentum_local_global(path: Path) -> Path:
    """Plain SGD and the book's rule (momentum 0.1) stop in the local minimum; plain
    momentum 0.9 rolls into the global one. Each path is labelled with where it ends."""
    fig, ax = _figure()
    w = np.linspace(-2.1, 2.7, 400)
    ax.plot(w, [local_global_curve(v) for v in w], color="black", lw=1, label="loss(w)")
    labels = {
        "sgd": ("tab:red", "plain SGD"),
        "book": ("tab:orange", "the book's rule (Nesterov form), momentum=0.1"),
        "momentum": ("tab:blue", "plain momentum, momentum=0.9"),
    }
    for key, p in momentum_paths().items():
        colour, label = labels[key]
        ax.plot(
            p,
            [local_global_curve(v) for v in p],
            ".-",
            color=colour,
            ms=3,
            lw=0.6,
            label=f"{label}: ends at w={p[-1]:.2f}",
        )
    ax.set_xlabel("w")
    ax.set_ylabel("loss")
    ax.legend(fontsize=8)
    ax.set_title("A local and a global minimum: 300 steps from w=2.5, learning rate 0.01")
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


def _arrow(
    ax: Any, start: Sequence[float], end: Sequence[float], colour: str, shrink: float = 0.0
) -> None:
    """An arrow from ``start`` to ``end``; ``shrink`` points kept clear at both ends."""
    props = {"arrowstyle": "->", "color": colour, "lw": 1.5, "shrinkA": shrink, "shrinkB": shrink}
    ax.annotate("", xy=tuple(end), xytext=tuple(start), arrowprops=props)


def _plane(ax: Any, title: str, limits: tuple[float, float] = (-0.2, 1.8)) -> None:
    ax.set_xlim(*limits)
    ax.set_ylim(*limits)
    ax.set_aspect("equal")
    ax.grid(True, lw=0.3)
    ax.set_title(title, fontsize=10)


def vector_addition(path: Path) -> Path:
    """§2.3.5, figures 2.6-2.8: A = [0.5, 1] as a point, as an arrow, and A + B."""
    plt = _plt()
    fig, axes = plt.subplots(
        1, 3, figsize=(FIGURE_SIZE_PX[0] / _DPI, FIGURE_SIZE_PX[1] / _DPI), dpi=_DPI
    )
    a, b = torch.tensor([0.5, 1.0]), torch.tensor([1.0, 0.25])
    total = vector_add(a, b)
    axes[0].plot(*a.tolist(), "o", color="tab:blue")
    axes[0].annotate("A = [0.5, 1]", a.tolist(), xytext=(5, 5), textcoords="offset points")
    _plane(axes[0], "a point in a 2D space")
    _arrow(axes[1], (0, 0), a.tolist(), "tab:blue")
    axes[1].annotate("A = [0.5, 1]", a.tolist(), xytext=(5, 5), textcoords="offset points")
    _plane(axes[1], "the point as an arrow")
    _arrow(axes[2], (0, 0), a.tolist(), "tab:blue")
    _arrow(axes[2], a.tolist(), total.tolist(), "tab:green")
    _arrow(axes[2], (0, 0), total.tolist(), "tab:red")
    axes[2].annotate("A = [0.5, 1]", (0.1, 0.6), fontsize=8)
    axes[2].annotate("B = [1, 0.25]", (0.75, 1.4), fontsize=8)
    x, y = total.tolist()
    axes[2].annotate(f"A + B = [{x:g}, {y:g}]", (0.6, 0.35), fontsize=8, color="tab:red")
    _plane(axes[2], "the sum: the arrows chained")
    fig.suptitle("Adding vectors: geometric interpretation (§2.3.5)")
    return _save(fig, path)


def rotation(path: Path, degrees: float = 30.0) -> Path:
    """§2.3.5: rotating 2D points by θ is a dot product with R = [u, v]."""
    fig, ax = _figure()
    theta = math.radians(degrees)
    r = rotation_matrix(theta)
    square = torch.tensor([[1.0, 0.0], [1.0, 0.5], [0.0, 0.5], [0.0, 0.0], [1.0, 0.0]])
    turned = rotate(square, theta)
    ax.plot(square[:, 0], square[:, 1], "o-", color="tab:blue", label="points x")
    ax.plot(turned[:, 0], turned[:, 1], "o-", color="tab:red", label=f"dot(x, R), θ = {degrees:g}°")
    _arrow(ax, (0, 0), r[0].tolist(), "tab:green")
    _arrow(ax, (0, 0), r[1].tolist(), "tab:purple")
    u, v = (", ".join(f"{c:.2g}" for c in row.tolist()) for row in r)
    ax.annotate(
        f"u = [cos θ, sin θ] = [{u}]",
        r[0].tolist(),
        xytext=(5, -12),
        textcoords="offset points",
        color="tab:green",
    )
    ax.annotate(
        f"v = [-sin θ, cos θ] = [{v}]",
        r[1].tolist(),
        xytext=(5, 5),
        textcoords="offset points",
        color="tab:purple",
    )
    _plane(ax, "A rotation as a tensor operation: R = [u, v] (§2.3.5)", (-0.8, 1.5))
    ax.legend(loc="lower left")
    return _save(fig, path)


def computation_graph(path: Path) -> Path:
    """§2.4.4: the basic graph at x=2, w=3, b=1, y_true=4, forward values and backward edges."""
    fig, ax = _figure()
    g = ScalarGraph()
    f, edges = g.forward(), g.backward_edges()
    nodes = {
        "x": ((0.1, 0.85), f"x = {g.x:g}"),
        "w": ((0.4, 0.85), f"w = {g.w:g}"),
        "x1": ((0.25, 0.62), f"x1 = x * w = {f['x1']:g}"),
        "b": ((0.6, 0.62), f"b = {g.b:g}"),
        "x2": ((0.4, 0.4), f"x2 = x1 + b = {f['x2']:g}"),
        "y_true": ((0.8, 0.4), f"y_true = {g.y_true:g}"),
        "loss_val": ((0.55, 0.15), f"loss_val = abs(y_true - x2) = {f['loss_val']:g}"),
    }
    for (x, y), text in nodes.values():
        ax.text(x, y, text, ha="center", va="center", bbox={"boxstyle": "round", "fc": "white"})
    forward = [
        ("x", "x1"),
        ("w", "x1"),
        ("x1", "x2"),
        ("b", "x2"),
        ("x2", "loss_val"),
        ("y_true", "loss_val"),
    ]
    for a, b in forward:
        _arrow(ax, nodes[a][0], nodes[b][0], "grey", shrink=12)
    for (upper, lower), value in edges.items():
        (x0, y0), (x1, y1) = nodes[upper][0], nodes[lower][0]
        ax.text(
            (x0 + x1) / 2 + 0.03,
            (y0 + y1) / 2,
            f"grad({upper}, {lower}) = {value:g}",
            fontsize=7,
            color="tab:red",
        )
    gw = " * ".join(f"{edges[e]:g}" for e in (("loss_val", "x2"), ("x2", "x1"), ("x1", "w")))
    gb = " * ".join(f"{edges[e]:g}" for e in (("loss_val", "x2"), ("x2", "b")))
    ax.text(
        0.02,
        0.02,
        f"grad(loss_val, w) = {gw} = {g.grad_by_paths('w'):g}\n"
        f"grad(loss_val, b) = {gb} = {g.grad_by_paths('b'):g}",
        fontsize=9,
    )
    ax.set_axis_off()
    ax.set_title("§2.4.4: forward pass (values) and backward pass (edge derivatives, red)")
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
        vector_addition(out / "vector_addition.png"),
        rotation(out / "rotation.png"),
        computation_graph(out / "computation_graph.png"),
    ]
    if images is not None and labels is not None:
        paths.append(digits_grid(images, labels, out / "digits_grid.png"))
        paths.append(fourth_digit(images, labels, out / "train_images_4.png"))
    if batch_losses is not None:
        paths.append(loss_curve(batch_losses, out / "loss_curve.png"))
    return paths
