"""The ``dl-ch2`` command.

- ``dl-ch2 data``: fetch and verify MNIST, print where the files are;
- ``dl-ch2 train``: the main job, the chapter end to end on MNIST (see ``main_job``);
- ``dl-ch2 evaluate --weights PATH``: reload a run's saved weights, report their accuracy;
- ``dl-ch2 figures --out DIR``: the chapter's figures as PNGs;
- ``dl-ch2 demo``: the from-scratch model on synthetic MNIST-shaped data (no data needed);
- ``dl-ch2 grade ADAPTER``: grade an implementation with the conformance suite.

Every failure is one line on stderr, ``dl-ch2 <command>: error: ...``, and no traceback:
exit status 2 for a usage error (the option is named: a bad value, an unusable output
folder), 1 for a runtime one (data, training, files). Option values are checked when
parsed, before any work. ``grade`` keeps the exit codes of its own contract.
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from conformance.atomic import OutputPathError, ensure_writable_dir
from dl_ch2 import __version__
from dl_ch2_tools.options import OptionError

if TYPE_CHECKING:
    import torch

# torch, the port and the main job are imported by the commands that use them, not here:
# `dl-ch2 grade` of a NumPy submission never imports torch (issue 27: the grade's start-up).

#: The runtime errors the port and its tools raise; each becomes one line and exit 1.
#: (MNISTError is a ValueError; NonFiniteLossError and its subclasses are ArithmeticErrors.)
RUNTIME_ERRORS: tuple[type[BaseException], ...] = (
    ValueError,
    TypeError,
    ArithmeticError,
    OSError,
    RuntimeError,
)


class _RmspropVariants:
    """``--rmsprop``'s choices, read from the port when first asked (it imports torch)."""

    def _variants(self) -> tuple[str, ...]:
        from dl_ch2.first_example import RMSPROP_VARIANTS

        return tuple(RMSPROP_VARIANTS)

    def __contains__(self, value: object) -> bool:
        return value in self._variants()

    def __iter__(self) -> Any:
        return iter(self._variants())


class UsageError(Exception):
    """A bad option value found after parsing; exit 2, the option named."""

    def __init__(self, option: str, message: str) -> None:
        super().__init__(f"argument {option}: {message}")
        self.option = option


class _Parser(argparse.ArgumentParser):
    """argparse, with its usage errors on one line (and exit 2, as argparse does)."""

    def error(self, message: str) -> NoReturn:
        hint = f"see `{self.prog} --help`"
        self.exit(2, f"{self.prog}: error: {_one_line(message)} ({hint})\n")


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


# --- option types: each names what it wants; argparse adds the option's name -------------


def integer(text: str) -> int:
    """Any integer; its range is the main job's to check."""
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def number(text: str) -> float:
    """Any float (nan and inf included); its range is the main job's to check."""
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def positive_int(text: str) -> int:
    """An integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {value}")
    return value


def positive_finite_float(text: str) -> float:
    """A float > 0 that is not inf or nan."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be positive and finite, got {text}")
    return value


def seed_int(text: str) -> int:
    """An integer in [0, 2**64 - 1], what ``torch.Generator.manual_seed`` takes."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected an integer in [0, 2**64 - 1], got {text!r}"
        ) from None
    if not 0 <= value <= 2**64 - 1:
        raise argparse.ArgumentTypeError(f"must be an integer in [0, 2**64 - 1], got {value}")
    return value


def device_arg(text: str) -> str:
    """A torch device this machine has (``cpu``, ``cuda``, ``cuda:1``, ...)."""
    from dl_ch2._checks import resolve_device

    try:
        resolve_device(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(_one_line(exc)) from None
    return text


def folder_arg(text: str) -> str:
    """A path that is a folder or does not exist yet (created when needed)."""
    path = Path(text).expanduser()
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} exists and is not a directory")
    return str(path)


def _writable_out(option: str, path: str) -> Path:
    """Check an output folder before any work: a usage error naming ``option`` otherwise."""
    try:
        ensure_writable_dir(path)
    except OutputPathError as exc:
        raise UsageError(option, str(exc)) from None
    return Path(path)


def synthetic_digits(
    n: int, *, generator: torch.Generator, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """MNIST-shaped stand-in: (n, 784) float32 in [0, 1], about as sparse as MNIST.

    The pixels are split at random into 10 disjoint "strokes", one per class; a sample
    lights its class's stroke with random intensities plus stray pixels of another's.
    """
    import torch

    labels = torch.randint(0, 10, (n,), generator=generator)
    group = torch.randperm(784, generator=generator) % 10
    masks = (group[None, :] == torch.arange(10)[:, None]).float()
    other = torch.randint(0, 10, (n,), generator=generator)
    intensity = torch.rand(n, 784, generator=generator)
    stray = (torch.rand(n, 784, generator=generator) > 0.7).float() * masks[other]
    images = (masks[labels] + stray).clamp(0, 1) * intensity
    return images.to(device), labels.to(device)


def _demo(args: argparse.Namespace) -> int:
    import torch

    from dl_ch2._checks import resolve_device
    from dl_ch2.naive_model import build_naive_model
    from dl_ch2.training_loop import evaluate, fit

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
    from dl_ch2_tools.mnist import FILES, fetch_mnist, load_mnist

    raw = fetch_mnist(args.root)
    (tx, ty), (sx, _sy) = load_mnist(args.root)
    print(f"MNIST verified in {raw}")
    for spec in FILES.values():
        print(f"  {spec.name}  md5 {spec.md5}")
    print(f"train {tx.shape} {tx.dtype}, test {sx.shape}; train_labels[4] = {int(ty[4])}")
    return 0


def _train(args: argparse.Namespace) -> int:
    from dl_ch2_tools.main_job import TrainConfig, run_train

    try:
        run_train(
            TrainConfig(
                model=args.model,
                backend=args.backend,
                device=args.device,
                epochs=args.epochs,
                batch_size=args.batch_size,
                learning_rate=args.learning_rate,
                seed=args.seed,
                out=None if args.out is None else Path(args.out),
                data_root=args.root,
                figures=not args.no_figures,
                force=args.force,
                compile=args.compile,
                rmsprop=args.rmsprop,
                runs_root=Path(args.runs_root),
                dist_timeout=args.dist_timeout,
            )
        )
    except OutputPathError as exc:  # raised before any work
        raise UsageError("--out" if args.out is not None else "--runs-root", str(exc)) from None
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from dl_ch2_tools.main_job import evaluate_weights

    path = Path(args.weights)
    if not path.is_file():
        raise UsageError("--weights", f"{args.weights} is not a file")
    result = evaluate_weights(path, device=args.device, data_root=args.root)
    recorded = result["recorded_test_accuracy"]
    trusted, why = result["record_trusted"]
    sha = result["sha256"][:16]
    print(f"weights: {path} ({result['model']} model, sha256 {sha}... matches; {why})")
    line = f"test accuracy: {result['test_accuracy']:.4f}"
    if isinstance(recorded, (int, float)) and trusted:
        same = "the same" if recorded == result["test_accuracy"] else "DIFFERENT"
        line += f" (the run recorded {recorded:.4f}: {same})"
    elif isinstance(recorded, (int, float)):
        line += " (the sidecar's recorded accuracy is not compared: it is not signed by you)"
    print(line)
    return 0


def _figures(args: argparse.Namespace) -> int:
    try:  # before any work: without the plot extra, one line naming it (exit 2)
        import matplotlib  # noqa: F401
    except ImportError:
        from dl_ch2_tools.figures import PLOT_EXTRA_HINT

        print(f"dl-ch2 figures: error: {PLOT_EXTRA_HINT}", file=sys.stderr)
        return 2
    from dl_ch2_tools import figures
    from dl_ch2_tools.mnist import load_mnist

    out = _writable_out("--out", args.out)
    (tx, ty), _ = load_mnist(args.root)
    for path in figures.make_all(out, tx, ty):
        print(path)
    return 0


def _bench(args: argparse.Namespace) -> int:
    from dl_ch2_tools.bench import run_bench

    _writable_out("--out", args.out)
    run_bench(
        device=args.device,
        repeats=args.repeats,
        epochs=args.epochs,
        out=Path(args.out),
        include_memory=not args.no_memory,
        samples=args.samples,
        only=args.only.split(",") if args.only is not None else None,
    )
    return 0


def _grade(args: argparse.Namespace) -> int:
    from conformance.__main__ import grade_from_args

    if getattr(args, "gradescope", None) or getattr(args, "rubric", None):
        return _classroom(args)  # course mode (conformance.grading.cli.course_mode)
    return grade_from_args(args)


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows ``(default: X)`` after every option's help, but for None and off switches.

    (Their help says what leaving them out means.)
    """

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


DATA_ROOT_HELP = "MNIST data root (default: $DL_CH2_DATA, else the per-user cache)"


def _add_device(parser: argparse.ArgumentParser, *, checked: bool = True) -> None:
    parser.add_argument(
        "--device",
        type=device_arg if checked else str,
        default="cpu",
        help="torch device: cpu, cuda, cuda:1, ...",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="dl-ch2",
        description="Chapter 2 of Deep Learning with Python, in PyTorch.",
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"dl-ch2 {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_demo(sub)
    data = sub.add_parser("data", help="fetch and verify MNIST", formatter_class=_HelpFormatter)
    data.add_argument("--root", type=folder_arg, default=None, help=DATA_ROOT_HELP)
    data.set_defaults(func=_data)
    _add_train(sub)
    ev = sub.add_parser(
        "evaluate",
        help="reload weights saved by `dl-ch2 train` and report their test accuracy",
        formatter_class=_HelpFormatter,
    )
    ev.add_argument(
        "--weights",
        required=True,
        help="a .safetensors file written by `dl-ch2 train` (its .json sidecar beside it)",
    )
    _add_device(ev)
    ev.add_argument("--root", type=folder_arg, default=None, help=DATA_ROOT_HELP)
    ev.set_defaults(func=_evaluate)
    figs = sub.add_parser(
        "figures", help="write the chapter's figures as PNGs", formatter_class=_HelpFormatter
    )
    figs.add_argument("--out", default="figures", help="folder the PNGs are written to")
    figs.add_argument("--root", type=folder_arg, default=None, help=DATA_ROOT_HELP)
    figs.set_defaults(func=_figures)
    _add_bench(sub)
    from conformance.__main__ import add_grade_arguments  # the same options as python -m

    grade = sub.add_parser(
        "grade",
        help="grade an implementation with the conformance suite "
        "(exit 0 passed, 1 failures, 2 usage, 3 incomplete)",
    )
    add_grade_arguments(grade)
    grade.set_defaults(func=_grade)
    _add_classroom_commands(sub, grade)
    return parser


def _add_demo(sub: Any) -> None:
    demo = sub.add_parser(
        "demo",
        help="train the from-scratch model on synthetic digits (no data needed)",
        formatter_class=_HelpFormatter,
    )
    _add_device(demo)
    demo.add_argument("--epochs", type=positive_int, default=3, help="passes over the data")
    demo.add_argument("--batch-size", type=positive_int, default=128, help="samples per step")
    demo.add_argument(
        "--learning-rate", type=positive_finite_float, default=1e-3, help="SGD learning rate"
    )
    demo.add_argument(
        "--samples", type=positive_int, default=12000, help="synthetic training samples"
    )
    demo.add_argument("--seed", type=seed_int, default=0, help="in [0, 2**64 - 1]")
    demo.set_defaults(func=_demo)


def _add_train(sub: Any) -> None:
    train = sub.add_parser(
        "train",
        help="the chapter end to end on MNIST (the main job)",
        formatter_class=_HelpFormatter,
    )
    train.add_argument(
        "--model",
        choices=["naive", "keras", "both"],
        default="both",
        help="§2.5's from-scratch model, §2.1's Keras one, or both",
    )
    train.add_argument(
        "--backend",
        choices=["torch", "numpy"],
        default="torch",
        help="the port, or the NumPy reference (same weights and batches)",
    )
    _add_device(train)
    # the values are checked once, by main_job.validate_config (OptionError: exit 2)
    train.add_argument(
        "--epochs",
        type=integer,
        default=None,
        help="passes over the data (default: the book's, 10 from scratch, 5 for Keras)",
    )
    train.add_argument("--batch-size", type=integer, default=128, help="samples per step")
    train.add_argument(
        "--learning-rate",
        type=number,
        default=1e-3,
        help="SGD learning rate of the from-scratch model (positive, finite)",
    )
    train.add_argument("--seed", type=integer, default=0, help="in [0, 2**64 - 1]")
    _add_train_outputs(train)
    train.set_defaults(func=_train)


def _add_train_outputs(train: Any) -> None:
    """``train``'s options after ``--seed``: where the run goes, and how it is run."""
    train.add_argument(
        "--out",
        default=None,
        help="run directory (default: a new RUNS_ROOT/<UTC timestamp>/, and RUNS_ROOT/latest "
        "pointing at it); refused if it holds an earlier run, unless --force",
    )
    train.add_argument("--runs-root", default="runs", help="where runs go without --out")
    train.add_argument(
        "--force", action="store_true", help="replace an earlier run's files in --out"
    )
    _add_train_how(train)


def _add_train_how(train: argparse.ArgumentParser) -> None:
    """``train``'s data, figures, compilation and RMSprop options."""
    train.add_argument("--root", type=folder_arg, default=None, help=DATA_ROOT_HELP)
    train.add_argument("--no-figures", action="store_true", help="skip the chapter's figures")
    train.add_argument(
        "--compile", action="store_true", help="torch.compile the training steps (torch backend)"
    )
    train.add_argument(
        "--rmsprop",
        choices=_RmspropVariants(),  # type: ignore[arg-type]
        metavar="VARIANT",  # (a metavar of choices would read them at parser build)
        default="keras-2.6",
        help="the first example's RMSprop: keras-2.6, the book's (epsilon outside the square "
        "root), or keras-3, TF 2.11+ and Keras 3's (inside)",
    )
    train.add_argument(
        "--dist-timeout",
        type=positive_finite_float,
        default=None,
        help="under torchrun: seconds a collective may wait for a peer before the job "
        "fails (default: $DL_CH2_DIST_TIMEOUT, else 60)",
    )


def _add_bench(sub: Any) -> None:
    # values are checked once, by run_bench (OptionError, exit 2 naming the option)
    bench = sub.add_parser(
        "bench",
        help="time training against the GEMM floor and baselines",
        formatter_class=_HelpFormatter,
    )
    _add_device(bench, checked=False)
    bench.add_argument("--repeats", type=int, default=5, help="timed rounds per candidate")
    bench.add_argument("--epochs", type=int, default=5, help="epochs per timed round")
    bench.add_argument(
        "--samples", type=int, default=60000, help="synthetic training samples (>= 128)"
    )
    bench.add_argument("--out", default="bench-out", help="folder for bench.json and bench.md")
    bench.add_argument(
        "--no-memory",
        action="store_true",
        help="skip the child-process runs (peak memory; a fresh process's first compiled "
        "fit; the NumPy reference's grade time)",
    )
    bench.add_argument(
        "--only",
        default=None,
        metavar="NAME[,NAME...]",
        help="run only these candidates (book_fit, compiled_fit, first_example, "
        "first_example_compiled, idiomatic, numpy_reference; default: all)",
    )
    bench.set_defaults(func=_bench)


def _classroom(args: argparse.Namespace) -> int:
    from conformance.grading.cli import dispatch  # i13: course-staff subcommands

    return int(dispatch(args) or 0)


def _add_classroom_commands(sub: Any, grade: argparse.ArgumentParser) -> None:
    """i13: ``grade --gradescope``, ``gradescope-bundle``, ``grade-all`` (conformance's)."""
    from conformance.grading import cli as classroom_cli

    classroom_cli.add_gradescope_options(grade)
    classroom_cli.register(sub)
    for name in ("gradescope-bundle", "grade-all", "gradescope-run", "starter"):
        sub.choices[name].set_defaults(func=_classroom)


def parse_command(parser: argparse.ArgumentParser, argv: Sequence[str]) -> argparse.Namespace:
    """``argv`` parsed; for ``grade``, what follows ``--`` goes to pytest wherever the grade's
    own options stand (argparse takes a positional list only where it first meets it, so
    ``grade x.py --dtype float64 -- -k relu`` was an error)."""
    argv = list(argv)
    if argv[:1] != ["grade"] or "--" not in argv:
        return parser.parse_args(argv)
    cut = argv.index("--")
    args = parser.parse_args(argv[:cut])
    args.pytest_args = [*args.pytest_args, *argv[cut + 1 :]]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit status (0 ok, 1 runtime error, 2 usage error)."""
    parser = build_parser()
    try:
        args = parse_command(parser, sys.argv[1:] if argv is None else argv)
    except SystemExit as exc:  # usage errors (2), --help and --version (0)
        return exc.code if isinstance(exc.code, int) else 2
    prog = f"dl-ch2 {args.command}"
    func: Callable[[argparse.Namespace], Any] = args.func
    try:
        return int(func(args))
    except UsageError as exc:
        print(f"{prog}: error: {_one_line(exc)} (see `{prog} --help`)", file=sys.stderr)
        return 2
    except OptionError as exc:  # checked by the main job or the bench, before any work
        usage = f"argument {exc.option}: {_one_line(exc.reason)}"
        print(f"{prog}: error: {usage} (see `{prog} --help`)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except RUNTIME_ERRORS as exc:
        if _stopped_by_signal(exc):  # SIGTERM during `train` (main_job.sigterm_raises)
            print(f"{prog}: {exc}", file=sys.stderr)
            return 128 + signal.SIGTERM
        if os.environ.get("DL_CH2_DEBUG"):
            raise
        hint = ""
        if _non_finite_loss(exc) and hasattr(args, "learning_rate"):
            hint = f" (--learning-rate {args.learning_rate}: try a smaller one)"
        print(f"{prog}: error: {_describe(exc)}{hint}", file=sys.stderr)
        # grading's own contract: a bad adapter or metadata (ValueError) is a usage error
        return 2 if args.command == "grade" and isinstance(exc, ValueError) else 1


def _stopped_by_signal(exc: BaseException) -> bool:
    """A main job's StoppedBySignal (only ``train`` imports the main job, so only it raises it)."""
    main_job = sys.modules.get("dl_ch2_tools.main_job")
    return main_job is not None and isinstance(exc, main_job.StoppedBySignal)


def _non_finite_loss(exc: BaseException) -> bool:
    """The port's NonFiniteLossError (raised only where the port was imported)."""
    monitor = sys.modules.get("dl_ch2.loss_monitor")
    return monitor is not None and isinstance(exc, monitor.NonFiniteLossError)


def _describe(exc: BaseException) -> str:
    """One line: the message, with the exception's type where the message alone is vague."""
    msg = _one_line(exc) or type(exc).__name__
    if isinstance(exc, (ValueError, RuntimeError)) and type(exc) in (ValueError, RuntimeError):
        return msg
    return f"{type(exc).__name__}: {msg}"


if __name__ == "__main__":
    raise SystemExit(main())
