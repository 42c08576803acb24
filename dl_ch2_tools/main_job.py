"""The main job, ``dl-ch2 train``: the chapter end to end on MNIST.

1. §2.1: load MNIST and show the data facts;
2. §2.5: train the from-scratch NaiveSequential (SGD, lr 1e-3, batch 128, 10 epochs),
   printing the notebook's lines and ``accuracy: 0.xx``;
3. §2.1: train the first example's Keras-faithful model (RMSprop, 5 epochs, batch 128),
   printing each epoch's loss and ``accuracy`` as Keras does (running means over the
   epoch's batches, the book's ``acc: 0.9273``) beside ``train_set_accuracy`` (the whole
   training set after the epoch), then its test accuracy and the prediction for
   ``test_images[0]``;
4. save each trained model's weights (``naive.safetensors``, ``keras.safetensors``, each
   with a JSON sidecar: the run's configuration, the MNIST md5s, the test accuracy and the
   weights file's sha256), then write ``metrics.json``, the loss curve and the chapter's
   figures into the run directory.

The run directory is checked before any work: ``out`` must be a writable folder (checked
with a probe file) and must not hold an earlier run's ``metrics.json`` unless ``force``.
Without ``out``, each run gets ``<runs_root>/<UTC timestamp>/`` (a ``-N`` suffix keeps two
runs started in the same second apart) and ``<runs_root>/latest``, a symlink replaced
atomically, points at the newest finished run.

``evaluate_weights`` (``dl-ch2 evaluate --weights``) reloads saved weights, after checking
their sha256, and measures the test accuracy again.

``--backend numpy`` runs the same steps on the NumPy reference, from the same initial
weights and the same batches as the torch backend with the same seed (the reference is
imported only then, inside the functions: the port never imports ``conformance``).

Under ``torchrun`` (issue 15) both trainings run data-parallel (``dl_ch2.distributed``):
every rank loads the same data and seed and trains on its shard of each batch; only rank
0 prints and writes the run directory, after every rank has checked that the weights are
identical (each model's weights are saved once they agree). A rank that dies or hangs
ends the job with a one-line error, exit status 1 and no ``metrics.json``; torchrun's
SIGTERM to the surviving ranks is turned into ``StoppedBySignal`` so that rank 0 reports
too (see :func:`sigterm_raises`).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import itertools
import json
import math
import os
import platform
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn

import numpy as np
import torch

from conformance.atomic import OutputPathError, atomic_write, ensure_writable_dir
from dl_ch2 import __version__, distributed
from dl_ch2._checks import resolve_device
from dl_ch2.first_example import (
    RMSPROP_VARIANTS,
    build_first_example_model,
    predict,
    preprocess,
    train_first_example,
)
from dl_ch2.naive_model import NaiveSequential, build_naive_model
from dl_ch2.training_loop import evaluate, fit
from dl_ch2_tools.mnist import FILES, idx_bytes, load_mnist
from dl_ch2_tools.options import OptionError

__all__ = [
    "MAX_SEED",
    "OutputPathError",
    "StoppedBySignal",
    "TrainConfig",
    "evaluate_weights",
    "prepare_run_dir",
    "run_train",
    "sigterm_raises",
    "validate_config",
]

#: Seeds are what ``torch.Generator.manual_seed`` takes without wrapping: [0, 2**64 - 1].
MAX_SEED = 2**64 - 1


@dataclass
class TrainConfig:
    model: str = "both"  # naive | keras | both
    backend: str = "torch"  # torch | numpy
    device: str = "cpu"
    epochs: int | None = None  # None: 10 for naive, 5 for keras (the book's)
    batch_size: int = 128
    learning_rate: float = 1e-3
    seed: int = 0
    out: Path | None = None  # None: <runs_root>/<timestamp>/, and <runs_root>/latest
    data_root: str | None = None
    figures: bool = True
    force: bool = False  # replace an earlier run's metrics.json in ``out``
    compile: bool = False  # torch.compile the training steps (torch backend)
    rmsprop: str = "keras-2.6"  # the first example's: keras-2.6 (the book's) or keras-3
    runs_root: Path = Path("runs")
    save_weights: bool = True
    dist_timeout: float | None = None  # seconds; None: $DL_CH2_DIST_TIMEOUT or 60


class _TorchPermutations:
    """Gives the NumPy reference the torch backend's shuffles (same seed, same batches)."""

    def __init__(self, generator: torch.Generator) -> None:
        self.generator = generator

    def permutation(self, n: int) -> np.ndarray:
        return torch.randperm(n, generator=self.generator).numpy()


def _write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    atomic_write(path, json.dumps(payload, indent=2) + "\n")


def _versions() -> dict[str, str]:
    return {
        "dl_ch2": __version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


def validate_config(cfg: TrainConfig) -> None:
    """Every option checked before any work, once: ``OptionError`` naming the CLI option.

    (A value of the wrong type, from Python, is a TypeError naming the field.)
    """
    if cfg.model not in ("naive", "keras", "both"):
        raise OptionError("--model", f"must be naive, keras or both, got {cfg.model!r}", "model")
    if cfg.backend not in ("torch", "numpy"):
        raise OptionError("--backend", f"must be torch or numpy, got {cfg.backend!r}", "backend")
    for name in ("batch_size", "epochs", "seed"):
        value = getattr(cfg, name)
        if name == "epochs" and value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int, got {type(value).__name__} ({value!r})")
    if cfg.epochs is not None and cfg.epochs < 1:
        raise OptionError("--epochs", f"must be >= 1, got {cfg.epochs}", "epochs")
    if cfg.batch_size < 1:
        raise OptionError("--batch-size", f"must be >= 1, got {cfg.batch_size}", "batch_size")
    if not 0 <= cfg.seed <= MAX_SEED:
        raise OptionError("--seed", f"must be in [0, 2**64 - 1], got {cfg.seed}", "seed")
    lr = cfg.learning_rate
    if isinstance(lr, bool) or not isinstance(lr, (int, float)):
        raise TypeError(f"learning_rate must be a float, got {type(lr).__name__} ({lr!r})")
    if not (math.isfinite(lr) and lr > 0):
        raise OptionError(
            "--learning-rate", f"must be positive and finite, got {lr}", "learning_rate"
        )
    if cfg.rmsprop not in RMSPROP_VARIANTS:
        choices = ", ".join(RMSPROP_VARIANTS)
        raise OptionError("--rmsprop", f"must be one of {choices}, got {cfg.rmsprop!r}", "rmsprop")
    if cfg.rmsprop != "keras-2.6" and cfg.backend != "torch":
        raise OptionError(
            "--rmsprop",
            "the NumPy reference has Keras 2.6's RMSprop only (keras-2.6); use --backend torch",
            "rmsprop",
        )
    if cfg.compile and cfg.backend != "torch":
        raise OptionError("--compile", "needs --backend torch (torch.compile)", "compile")
    if distributed.launched_by_torchrun() and cfg.backend != "torch":
        raise OptionError(
            "--backend", "numpy runs in one process; launch it without torchrun", "backend"
        )
    if distributed.launched_by_torchrun() and cfg.compile:
        raise OptionError(
            "--compile",
            "not supported under torchrun (the gradient all-reduce runs between autograd "
            "and the update); drop --compile or run one process",
            "compile",
        )


def _new_run_dir(runs_root: Path) -> Path:
    """``<runs_root>/<UTC timestamp>[-N]``, created here (mkdir is atomic: never shared)."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    for k in itertools.count():
        candidate = runs_root / (stamp if k == 0 else f"{stamp}-{k}")
        try:
            candidate.mkdir()
        except FileExistsError:
            continue
        return candidate
    raise AssertionError("unreachable")  # pragma: no cover


def _retire_legacy_latest(runs_root: Path) -> None:
    """An older layout wrote runs into a real ``runs/latest`` folder: keep it, renamed."""
    latest = runs_root / "latest"
    if latest.is_symlink() or not latest.exists():
        return
    if not latest.is_dir():
        raise OutputPathError(f"{latest} exists and is not a symlink or a directory")
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(latest.stat().st_mtime))
    for k in itertools.count():
        target = runs_root / f"{stamp}-legacy{'' if k == 0 else f'-{k}'}"
        if not target.exists():
            os.rename(latest, target)
            print(f"(kept the earlier run in {latest} as {target})")
            return


def _point_latest(runs_root: Path, run_dir: Path) -> None:
    """Atomically make ``<runs_root>/latest`` a relative symlink to ``run_dir``."""
    link = runs_root / "latest"
    tmp = runs_root / f".latest.{os.getpid()}.{time.monotonic_ns()}.tmp"
    try:
        os.symlink(run_dir.name, tmp, target_is_directory=True)
        os.replace(tmp, link)
    except OSError as exc:  # no symlinks here (some Windows setups): the run itself is kept
        with contextlib.suppress(OSError):
            tmp.unlink()
        print(f"(could not point {link} at {run_dir.name}: {exc})")


def prepare_run_dir(cfg: TrainConfig) -> tuple[Path, bool]:
    """The run directory, checked (and created) before any work; ``(path, created)``.

    Raises ``OutputPathError`` (a ValueError) naming the path and what is wrong.
    """
    if cfg.out is None:
        root = Path(cfg.runs_root)
        ensure_writable_dir(root)
        _retire_legacy_latest(root)
        return _new_run_dir(root), True
    out = Path(cfg.out)
    created = ensure_writable_dir(out)
    if (out / "metrics.json").exists() and not cfg.force:
        raise OutputPathError(
            f"{out} already holds a run (metrics.json); choose another --out, leave --out "
            "out for a new runs/<timestamp>/ folder, or pass --force to replace it"
        )
    return out, created


def _mnist_md5s(arrays: dict[str, np.ndarray]) -> dict[str, str]:
    """md5 of each array as its IDX file: for MNIST, the published md5s of the files."""
    return {
        FILES[key].name: hashlib.md5(idx_bytes(a), usedforsecurity=False).hexdigest()
        for key, a in arrays.items()
    }


def _compile_kwargs(cfg: TrainConfig) -> dict[str, Any]:
    # passed only when asked for, so the default run needs no compile support
    return {"compile": True} if cfg.compile else {}


def _run_config(cfg: TrainConfig, device: torch.device) -> dict[str, Any]:
    return {
        "model": cfg.model,
        "backend": cfg.backend,
        "device": str(device),
        "epochs": cfg.epochs,
        "batch_size": cfg.batch_size,
        "learning_rate": cfg.learning_rate,
        "seed": cfg.seed,
        "compile": cfg.compile,
        "rmsprop": cfg.rmsprop,
    }


def _save_trained(
    cfg: TrainConfig,
    model: torch.nn.Module,
    kind: str,
    out: Path | None,
    run: dict[str, Any],
    device: torch.device,
    result: dict[str, Any],
) -> None:
    if not cfg.save_weights or out is None:  # out is None on data-parallel ranks but 0
        return
    from dl_ch2_tools.weights import save_weights

    path = out / f"{kind}.safetensors"
    save_weights(
        model,
        path,
        {
            "model": kind,
            "trained_epochs": result["epochs"],
            "test_accuracy": result["test_accuracy"],
            "config": _run_config(cfg, device),
            "mnist_md5": run["mnist_md5"],
            "versions": _versions(),
        },
    )
    result["weights"] = path.name
    print(f"saved {path} (+ {path.name}.json)")


class TorchBackend:
    """The port: dl_ch2's ``fit`` and ``train_first_example`` on tensors on ``device``.

    Under torchrun (``dp``) both train data-parallel and end with every rank checking
    that its weights are rank 0's.
    """

    name = "torch"

    def __init__(
        self,
        cfg: TrainConfig,
        data: dict[str, np.ndarray],
        device: torch.device,
        dp: distributed.DataParallel | None,
    ) -> None:
        self.cfg, self.dp = cfg, dp
        self.x, self.y, self.test_x, self.test_y = (
            torch.from_numpy(data[k]).to(device) for k in ("train_x", "train_y", "test_x", "test_y")
        )

    def train_naive(
        self, model: NaiveSequential, epochs: int, epoch_acc: list[float]
    ) -> tuple[list[list[float]], float, np.ndarray]:
        """§2.5's fit; (batch losses, test accuracy, the predictions for test image 0)."""
        x, y = self.x, self.y
        history = fit(
            model,
            x,
            y,
            epochs=epochs,
            batch_size=self.cfg.batch_size,
            learning_rate=self.cfg.learning_rate,
            on_epoch_end=lambda e, _l: epoch_acc.append(evaluate(model, x, y, 10000)),
            **_compile_kwargs(self.cfg),
            data_parallel=self.dp,
            progress=False if self.dp is not None and self.dp.rank != 0 else None,
        )
        self._check_identical(model.weights)
        accuracy = evaluate(model, self.test_x, self.test_y)
        return history.batch_losses, accuracy, model(self.test_x[:1]).detach().cpu().numpy()[0]

    def train_keras(
        self, model: torch.nn.Module, epochs: int, shuffle: torch.Generator, report: Report
    ) -> tuple[list[float], float, np.ndarray]:
        """§2.1's training; (epoch losses, test accuracy, test image 0's probabilities)."""

        keras_accuracy: list[float] = []

        def on_epoch_end(epoch: int, loss: float) -> None:
            train_set = float((predict(model, self.x).argmax(1) == self.y).float().mean())
            report(epoch, loss, keras_accuracy[-1], train_set)

        losses = train_first_example(
            model,
            self.x,
            self.y,
            epochs=epochs,
            batch_size=self.cfg.batch_size,
            generator=shuffle,
            on_epoch_end=on_epoch_end,
            **_compile_kwargs(self.cfg),
            data_parallel=self.dp,
            rmsprop=self.cfg.rmsprop,
            keras_accuracy=keras_accuracy,
            print_fn=None,  # report prints the line, with the training set's accuracy
        )
        self._check_identical(list(model.parameters()))
        probs = predict(model, self.test_x)
        test_acc = float((probs.argmax(1) == self.test_y).float().mean())
        return losses, test_acc, probs[0].cpu().numpy()

    def _check_identical(self, weights: list[torch.Tensor]) -> None:
        if self.dp is not None:
            distributed.check_weights_identical(weights)


class NumPyBackend:
    """The suite's NumPy reference, from the torch model's initial weights and the torch
    backend's shuffles (same seed, same batches); the trained weights are copied back into
    the torch model, which is what gets saved. Imported only here: the port never imports
    ``conformance``."""

    name = "numpy"

    def __init__(self, cfg: TrainConfig, data: dict[str, np.ndarray]) -> None:
        import conformance.reference as ref

        self.ref, self.cfg = ref, cfg
        self.x, self.y, self.test_x, self.test_y = (
            data[k] for k in ("train_x", "train_y", "test_x", "test_y")
        )

    def train_naive(
        self, model: NaiveSequential, epochs: int, epoch_acc: list[float]
    ) -> tuple[list[list[float]], float, np.ndarray]:
        ref, x, y = self.ref, self.x, self.y
        rmodel = ref.build_naive_model(dtype=np.float32, rng=np.random.default_rng(0))
        rmodel.set_weights([w.detach().cpu().numpy() for w in model.weights])
        batch_losses = ref.fit(
            rmodel,
            x,
            y,
            epochs=epochs,
            batch_size=self.cfg.batch_size,
            learning_rate=self.cfg.learning_rate,
            on_epoch_end=lambda e, _l: epoch_acc.append(ref.evaluate(rmodel, x, y, 10000)),
        )
        accuracy = ref.evaluate(rmodel, self.test_x, self.test_y)
        _copy_into(model.weights, rmodel.weights)
        return batch_losses, accuracy, rmodel(self.test_x[:1])[0]

    def train_keras(
        self, model: torch.nn.Module, epochs: int, shuffle: torch.Generator, report: Report
    ) -> tuple[list[float], float, np.ndarray]:
        rmodel = self.ref.FirstExampleModel(dtype=np.float32, rng=np.random.default_rng(0))
        for w, p in zip(rmodel.weights, model.parameters(), strict=True):
            w[...] = p.detach().cpu().numpy()

        keras_accuracy: list[float] = []

        def on_epoch_end(epoch: int, loss: float) -> None:
            train_set = float((rmodel.predict(self.x).argmax(1) == self.y).mean())
            report(epoch, loss, keras_accuracy[-1], train_set)

        losses = self.ref.train_first_example(
            rmodel,
            self.x,
            self.y,
            epochs=epochs,
            batch_size=self.cfg.batch_size,
            rng=_TorchPermutations(shuffle),  # type: ignore[arg-type]
            on_epoch_end=on_epoch_end,
            keras_accuracy=keras_accuracy,
        )
        probs = rmodel.predict(self.test_x)
        _copy_into(list(model.parameters()), rmodel.weights)
        return losses, float((probs.argmax(1) == self.test_y).mean()), probs[0]


Backend = TorchBackend | NumPyBackend
#: ``report(epoch, mean_loss, keras_accuracy, train_set_accuracy)``, after each epoch of the
#: first example: Keras' running accuracy over the epoch's batches (what the book prints)
#: and the accuracy on the whole training set after the epoch.
Report = Callable[[int, float, float, float], None]


def _copy_into(weights: list[torch.Tensor], values: Sequence[np.ndarray]) -> None:
    with torch.no_grad():  # the trained weights, into the torch model that is saved
        for w, v in zip(weights, values, strict=True):
            w.copy_(torch.from_numpy(np.asarray(v)))


def _train_naive(
    cfg: TrainConfig, backend: Backend, device: torch.device
) -> tuple[dict[str, Any], torch.nn.Module]:
    epochs = 10 if cfg.epochs is None else cfg.epochs
    model = build_naive_model(device=device, generator=torch.Generator().manual_seed(cfg.seed))
    print(
        f"\n== §2.5 from-scratch model: NaiveSequential 784-512-10, SGD lr={cfg.learning_rate}, "
        f"batch {cfg.batch_size}, {epochs} epochs, backend {cfg.backend} =="
    )
    epoch_acc: list[float] = []
    batch_losses, accuracy, predictions0 = backend.train_naive(model, epochs, epoch_acc)
    print(f"accuracy: {accuracy:.2f}")
    return {
        "epochs": epochs,
        "learning_rate": cfg.learning_rate,
        "first_batch_loss": batch_losses[0][0],
        "epoch_loss": [float(np.mean(e)) for e in batch_losses],
        "epoch_train_set_accuracy": epoch_acc,
        "test_accuracy": accuracy,
        "test_images_0_prediction": int(np.argmax(predictions0)),
        "batch_losses": batch_losses,
    }, model


def _train_keras(
    cfg: TrainConfig, backend: Backend, device: torch.device, test_label_0: int
) -> tuple[dict[str, Any], torch.nn.Module]:
    epochs = 5 if cfg.epochs is None else cfg.epochs
    g = torch.Generator().manual_seed(cfg.seed)
    model = build_first_example_model(device=device, generator=g)
    shuffle = torch.Generator().manual_seed((cfg.seed + 1) % (MAX_SEED + 1))
    print(
        f"\n== §2.1 first example: Dense 512 relu -> Dense 10 softmax, RMSprop "
        f"({cfg.rmsprop}), batch "
        f"{cfg.batch_size}, {epochs} epochs, backend {cfg.backend} =="
    )
    epoch_acc: list[float] = []
    train_set_acc: list[float] = []
    steps = -(-len(backend.x) // cfg.batch_size)

    def report(e: int, loss: float, acc: float, train_set: float) -> None:
        epoch_acc.append(acc)
        train_set_acc.append(train_set)
        print(
            f"Epoch {e + 1}/{epochs}: {steps} steps - loss: {loss:.4f} - accuracy: {acc:.4f}"
            f" - train_set_accuracy: {train_set:.4f}"
        )

    losses, test_acc, p0 = backend.train_keras(model, epochs, shuffle, report)
    print(f"test_acc: {test_acc:.4f}")
    print(f"predictions[0] = {np.array2string(p0, precision=3, suppress_small=True)}")
    print(f"predicted class of test_images[0]: {int(p0.argmax())} (label {test_label_0})")
    return {
        "epochs": epochs,
        "steps_per_epoch": steps,
        "epoch_loss": losses,
        "epoch_accuracy": epoch_acc,  # Keras' running mean over the epoch's batches
        "epoch_train_set_accuracy": train_set_acc,  # the whole training set, after the epoch
        "test_accuracy": test_acc,
        "test_images_0_probabilities": [float(v) for v in p0],
        "test_images_0_prediction": int(p0.argmax()),
    }, model


def run_train(cfg: TrainConfig) -> dict[str, Any]:
    """Run the main job; returns the metrics written to ``<out>/metrics.json``.

    The configuration and the output location are checked before any work; each trained
    model's weights are saved as soon as it is trained.

    Under torchrun it joins the process group and trains data-parallel; other ranks than 0
    run silently and write nothing. A failed collective (a peer died or timed out) prints
    one line on stderr and exits with status 1, with no ``metrics.json``.
    """
    validate_config(cfg)
    if cfg.save_weights:
        import dl_ch2_tools.weights  # noqa: F401 - fail now, not after training
    launched = distributed.launched_by_torchrun()
    # only rank 0 writes; if its folder is refused, torchrun stops the other ranks
    rank0 = not launched or os.environ.get("RANK", "0") == "0"
    out, created = prepare_run_dir(cfg) if rank0 else (None, False)
    try:
        with sigterm_raises():
            if launched:
                distributed.init_from_env(timeout_s=cfg.dist_timeout)
                metrics = _run_data_parallel(cfg, out)
            else:
                metrics = _run(cfg, resolve_device(cfg.device), out, None)
    except BaseException:
        if created and out is not None:  # nothing kept: leave no empty run folder behind
            with contextlib.suppress(OSError):
                out.rmdir()
        raise
    if out is not None and cfg.out is None:
        _point_latest(Path(cfg.runs_root), out)
    return metrics


class StoppedBySignal(RuntimeError):
    """This process got SIGTERM (under torchrun: a peer failed, or the job was stopped).

    ``dl-ch2 train`` in one process reports it as ``stopped by SIGTERM``, exit 143.
    """


@contextlib.contextmanager
def sigterm_raises() -> Iterator[None]:
    """Turn the first SIGTERM into ``StoppedBySignal``; ignore later ones; restore on exit.

    Python's default action ends the process on the spot: a scheduler's or ``timeout``'s
    SIGTERM left an empty run folder behind, and under torchrun, which stops the surviving
    ranks with SIGTERM as soon as one rank fails, rank 0 died silently whenever the signal
    beat its own report of the dead peer. As an exception it reaches ``run_train``'s
    cleanup and the one-line report. Only the first SIGTERM raises, so none can interrupt
    the report; torchrun's SIGKILL, 30 s later, still ends a rank stuck in a collective.
    """
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise StoppedBySignal(f"stopped by {signal.Signals(signum).name}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run_data_parallel(cfg: TrainConfig, out: Path | None) -> dict[str, Any]:
    dp = distributed.DataParallel()
    device = resolve_device(cfg.device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    quiet = contextlib.redirect_stdout(io.StringIO()) if dp.rank != 0 else contextlib.nullcontext()

    reported: list[RuntimeError] = []

    def fail(exc: RuntimeError) -> NoReturn:
        if not reported:  # one line, even if torchrun's SIGTERM lands after it
            if isinstance(exc, distributed.DistributedError):
                print(f"dl-ch2: error: {exc}", file=sys.stderr)
            else:
                print(
                    f"dl-ch2: error: data-parallel training failed on rank {dp.rank} of "
                    f"{dp.world_size} ({distributed.describe(exc)}): a peer died or timed "
                    "out; no metrics.json was written",
                    file=sys.stderr,
                )
            reported.append(exc)
        raise SystemExit(1) from None

    try:
        try:
            with quiet:
                metrics = _run(cfg, device, out, dp)
        except RuntimeError as exc:  # gloo / NCCL report a dead or hung peer as RuntimeError
            fail(exc)
    except StoppedBySignal as exc:  # torchrun's SIGTERM, landing while the first was reported
        fail(exc)
    distributed.shutdown()
    return metrics


def _run(
    cfg: TrainConfig,
    device: torch.device,
    out: Path | None,
    dp: distributed.DataParallel | None,
) -> dict[str, Any]:
    start = time.perf_counter()
    if out is not None:
        print(f"run directory: {out}")
    raw, data = _load_and_show(cfg.data_root)
    backend: Backend = (
        TorchBackend(cfg, data, device, dp) if cfg.backend == "torch" else NumPyBackend(cfg, data)
    )
    metrics: dict[str, Any] = {
        "seed": cfg.seed,
        "backend": cfg.backend,
        "device": str(device),
        "batch_size": cfg.batch_size,
        "compile": cfg.compile,
        "rmsprop": cfg.rmsprop,
        "versions": _versions(),
        "argv": sys.argv[1:],
        "mnist_md5": _mnist_md5s(raw),
    }
    if cfg.model in ("naive", "both"):
        metrics["naive"], naive_model = _train_naive(cfg, backend, device)
        _save_trained(cfg, naive_model, "naive", out, metrics, device, metrics["naive"])
    if cfg.model in ("keras", "both"):
        first_label = int(raw["test_labels"][0])
        metrics["keras"], keras_model = _train_keras(cfg, backend, device, first_label)
        _save_trained(cfg, keras_model, "keras", out, metrics, device, metrics["keras"])
    metrics["wall_time_s"] = time.perf_counter() - start
    if dp is not None:
        metrics["data_parallel"] = {
            "world_size": dp.world_size,
            "steps": dp.steps,
            "bytes_all_reduced_per_step": dp.bytes_per_step(),
        }
    if out is None:  # only rank 0 writes
        return metrics
    _write_outputs(cfg, out, metrics, raw)
    return metrics


def _load_and_show(
    data_root: str | None,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """§2.1: MNIST as loaded (shown as the notebook shows it), and preprocessed."""
    (train_images, train_labels), (test_images, test_labels) = load_mnist(data_root)
    print("== §2.1 MNIST ==")
    print(f"train_images.shape = {train_images.shape}, dtype {train_images.dtype}")
    print(
        f"train_labels = {train_labels[:3].tolist()} ... {train_labels[-3:].tolist()} "
        f"(len {len(train_labels)})"
    )
    print(f"test_images.shape = {test_images.shape}")
    print(
        f"test_labels = {test_labels[:3].tolist()} ... {test_labels[-3:].tolist()} "
        f"(len {len(test_labels)})"
    )
    print(f"train_labels[4] = {int(train_labels[4])}")
    train_x, test_x = preprocess(train_images), preprocess(test_images)
    print(
        f"preprocessed: train {train_x.shape} {train_x.dtype} in [{train_x.min()}, {train_x.max()}]"
    )
    data = {
        "train_x": train_x,
        "train_y": train_labels.astype(np.int64),
        "test_x": test_x,
        "test_y": test_labels.astype(np.int64),
    }
    raw = {
        "train_images": train_images,
        "train_labels": train_labels,
        "test_images": test_images,
        "test_labels": test_labels,
    }
    return raw, data


def _write_outputs(
    cfg: TrainConfig, out: Path, metrics: dict[str, Any], raw: dict[str, np.ndarray]
) -> None:
    """The figures (if asked for and matplotlib is there), then metrics.json."""
    if cfg.figures:
        try:
            from dl_ch2_tools import figures

            written = figures.make_all(
                out,
                raw["train_images"],
                raw["train_labels"],
                metrics["naive"]["batch_losses"] if "naive" in metrics else None,
            )
            metrics["figures"] = [p.name for p in written]
        except ImportError as exc:
            print(f"(figures skipped: {exc})")
    _write_json_atomic(out / "metrics.json", metrics)
    print(f"\nwrote {out / 'metrics.json'} ({metrics['wall_time_s']:.1f} s)")


def evaluate_weights(
    path: str | os.PathLike[str],
    *,
    device: str = "cpu",
    data_root: str | None = None,
) -> dict[str, Any]:
    """Reload weights saved by ``run_train`` and measure their MNIST test accuracy again.

    The weights file's sha256 is checked against its sidecar before anything is loaded
    (``WeightsError`` otherwise), then the model the sidecar names is rebuilt, the tensors
    are loaded into it (strictly), MNIST is loaded and checked against the md5s the run
    recorded, and the test accuracy is measured as the run measured it.
    """
    from dl_ch2_tools.weights import WeightsError, load_weights, record_trust

    tensors, sidecar = load_weights(path)
    kind = sidecar.get("model")
    dev = resolve_device(device)
    model: torch.nn.Module
    if kind == "naive":
        model = build_naive_model(device=dev)
    elif kind == "keras":
        model = build_first_example_model(device=dev)
    else:
        raise WeightsError(f"{path}: the sidecar names model {kind!r}, not naive or keras")
    try:
        model.load_state_dict({k: v.to(dev) for k, v in tensors.items()}, strict=True)
    except RuntimeError as exc:
        msg = " ".join(str(exc).split())
        raise WeightsError(f"{path}: the tensors do not fit the {kind} model ({msg})") from exc
    (train_images, train_labels), (test_images, test_labels) = load_mnist(data_root)
    md5s = _mnist_md5s(
        {
            "train_images": train_images,
            "train_labels": train_labels,
            "test_images": test_images,
            "test_labels": test_labels,
        }
    )
    recorded = sidecar.get("mnist_md5")
    if recorded is not None and recorded != md5s:
        raise WeightsError(
            f"{path}: the run trained on MNIST files with md5s {recorded}, but the files "
            f"loaded now have {md5s}"
        )
    test_x = torch.from_numpy(preprocess(test_images)).to(dev)
    test_y = torch.from_numpy(test_labels.astype(np.int64)).to(dev)
    if kind == "naive":
        accuracy = evaluate(model, test_x, test_y)
    else:
        accuracy = float((predict(model, test_x).argmax(1) == test_y).float().mean())
    return {
        "model": kind,
        "test_accuracy": accuracy,
        "recorded_test_accuracy": sidecar.get("test_accuracy"),
        "record_trusted": record_trust(sidecar),  # (trusted, in words): dl_ch2_tools.weights
        "sha256": sidecar["sha256"],
        "config": sidecar.get("config"),
    }
