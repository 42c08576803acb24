"""The ``dl-ch2`` command.

- ``dl-ch2 data``: fetch and verify MNIST, print where the files are;
- ``dl-ch2 train``: the main job, the chapter end to end on MNIST (see ``main_job``);
- ``dl-ch2 figures --out DIR``: the chapter's figures as PNGs;
- ``dl-ch2 demo``: the from-scratch model on synthetic MNIST-shaped data (no data needed);
- ``dl-ch2 grade ADAPTER``: grade an implementation with the conformance suite.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

import torch

from dl_ch2 import __version__
from dl_ch2._checks import resolve_device
from dl_ch2.naive_model import build_naive_model
from dl_ch2.training_loop import evaluate, fit


def synthetic_digits(
    n: int, *, generator: torch.Generator, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """MNIST-shaped stand-in: (n, 784) float32 in [0, 1], about as sparse as MNIST.

    The pixels are split at random into 10 disjoint "strokes", one per class; a sample
    lights its class's stroke with random intensities plus stray pixels of another's.
    """
    labels = torch.randint(0, 10, (n,), generator=generator)
    group = torch.randperm(784, generator=generator) % 10
    masks = (group[None, :] == torch.arange(10)[:, None]).float()
    other = torch.randint(0, 10, (n,), generator=generator)
    intensity = torch.rand(n, 784, generator=generator)
    stray = (torch.rand(n, 784, generator=generator) > 0.7).float() * masks[other]
    images = (masks[labels] + stray).clamp(0, 1) * intensity
    return images.to(device), labels.to(device)


def _demo(args: argparse.Namespace) -> int:
    device = resolve_device(args.device)
    g = torch.Generator().manual_seed(args.seed)
    n_test = max(1, args.samples // 6)
    # one call, so train and test share the class strokes
    x, y = synthetic_digits(args.samples + n_test, generator=g, device=device)
    train_x, train_y, test_x, test_y = x[n_test:], y[n_test:], x[:n_test], y[:n_test]
    print(f"dl-ch2 {__version__} demo on {device}: synthetic data {tuple(train_x.shape)}")
    model = build_naive_model(device=device, generator=g)
    start = time.perf_counter()
    fit(
        model,
        train_x,
        train_y,
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
    )
    accuracy = evaluate(model, test_x, test_y)
    print(f"accuracy: {accuracy:.2f}")
    print(f"wall time: {time.perf_counter() - start:.1f} s")
    return 0


def _data(args: argparse.Namespace) -> int:
    from dl_ch2.tools.mnist import FILES, fetch_mnist, load_mnist

    raw = fetch_mnist(args.root)
    (tx, ty), (sx, _sy) = load_mnist(args.root)
    print(f"MNIST verified in {raw}")
    for spec in FILES.values():
        print(f"  {spec.name}  md5 {spec.md5}")
    print(f"train {tx.shape} {tx.dtype}, test {sx.shape}; train_labels[4] = {int(ty[4])}")
    return 0


def _train(args: argparse.Namespace) -> int:
    from pathlib import Path

    from dl_ch2.tools.main_job import TrainConfig, run_train

    run_train(
        TrainConfig(
            model=args.model,
            backend=args.backend,
            device=args.device,
            epochs=args.epochs,
            batch_size=args.batch_size,
            learning_rate=args.learning_rate,
            seed=args.seed,
            out=Path(args.out),
            data_root=args.root,
            figures=not args.no_figures,
            dist_timeout=args.dist_timeout,
        )
    )
    return 0


def _figures(args: argparse.Namespace) -> int:
    from pathlib import Path

    from dl_ch2.tools import figures
    from dl_ch2.tools.mnist import load_mnist

    (tx, ty), _ = load_mnist(args.root)
    for path in figures.make_all(Path(args.out), tx, ty):
        print(path)
    return 0


def _bench(args: argparse.Namespace) -> int:
    from pathlib import Path

    from dl_ch2.tools.bench import run_bench

    run_bench(
        device=args.device,
        repeats=args.repeats,
        epochs=args.epochs,
        out=Path(args.out),
        include_memory=not args.no_memory,
        samples=args.samples,
    )
    return 0


def _grade(args: argparse.Namespace) -> int:
    from conformance.__main__ import grade

    return grade(
        args.adapter, args.dtype, args.report_json, args.report_md, args.jobs, args.pytest_args
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dl-ch2",
        description="Chapter 2 of Deep Learning with Python, in PyTorch.",
    )
    parser.add_argument("--version", action="version", version=f"dl-ch2 {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="train the from-scratch model on synthetic digits")
    demo.add_argument("--device", default="cpu")
    demo.add_argument("--epochs", type=int, default=3)
    demo.add_argument("--batch-size", type=int, default=128)
    demo.add_argument("--learning-rate", type=float, default=1e-3)
    demo.add_argument("--samples", type=int, default=12000)
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(func=_demo)

    data = sub.add_parser("data", help="fetch and verify MNIST")
    data.add_argument("--root", default=None, help="data root (default: $DL_CH2_DATA or cache)")
    data.set_defaults(func=_data)

    train = sub.add_parser("train", help="the chapter end to end on MNIST (the main job)")
    train.add_argument("--model", choices=["naive", "keras", "both"], default="both")
    train.add_argument("--backend", choices=["torch", "numpy"], default="torch")
    train.add_argument("--device", default="cpu")
    train.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="default: 10 for the from-scratch model, 5 for the Keras one",
    )
    train.add_argument("--batch-size", type=int, default=128)
    train.add_argument(
        "--learning-rate",
        type=float,
        default=1e-3,
        help="SGD learning rate of the from-scratch model",
    )
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--out", default="runs/latest", help="run directory")
    train.add_argument("--root", default=None, help="MNIST data root")
    train.add_argument("--no-figures", action="store_true")
    train.add_argument(
        "--dist-timeout",
        type=float,
        default=None,
        help="under torchrun: seconds a collective may wait for a peer before the job "
        "fails (default: $DL_CH2_DIST_TIMEOUT or 60)",
    )
    train.set_defaults(func=_train)

    figs = sub.add_parser("figures", help="write the chapter's figures as PNGs")
    figs.add_argument("--out", default="figures")
    figs.add_argument("--root", default=None, help="MNIST data root")
    figs.set_defaults(func=_figures)

    bench = sub.add_parser("bench", help="time training against the GEMM floor and baselines")
    bench.add_argument("--device", default="cpu")
    bench.add_argument("--repeats", type=int, default=5)
    bench.add_argument("--epochs", type=int, default=5)
    bench.add_argument("--samples", type=int, default=60000)
    bench.add_argument("--out", default="bench-out")
    bench.add_argument("--no-memory", action="store_true", help="skip the peak-memory run")
    bench.set_defaults(func=_bench)

    grade = sub.add_parser("grade", help="grade an implementation with the conformance suite")
    grade.add_argument("adapter", help="numpy, torch-cpu, torch-cuda, module[:attr] or file.py")
    grade.add_argument("--dtype", choices=["float32", "float64"])
    grade.add_argument("--report-json")
    grade.add_argument("--report-md")
    grade.add_argument("-n", "--jobs", type=int, help="parallel workers (pytest-xdist)")
    grade.add_argument("pytest_args", nargs="*", help="after --: passed to pytest")
    grade.set_defaults(func=_grade)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ValueError as exc:
        print(f"dl-ch2: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
