"""The main job, ``dl-ch2 train``: the chapter end to end on MNIST.

1. §2.1: load MNIST and show the data facts;
2. §2.5: train the from-scratch NaiveSequential (SGD, lr 1e-3, batch 128, 10 epochs),
   printing the notebook's lines and ``accuracy: 0.xx``;
3. §2.1: train the first example's Keras-faithful model (RMSprop, 5 epochs, batch 128),
   print its test accuracy and the prediction for ``test_images[0]``;
4. write ``metrics.json``, the loss curve and the chapter's figures into the run directory.

``--backend numpy`` runs the same steps on the NumPy reference, from the same initial
weights and the same batches as the torch backend with the same seed.

Under ``torchrun`` (issue 15) both trainings run data-parallel (``dl_ch2.distributed``):
every rank loads the same data and seed and trains on its shard of each batch; only rank
0 prints and writes the run directory, after every rank has checked that the weights are
identical. A rank that dies or hangs ends the job with a one-line error, exit status 1 and
no ``metrics.json``.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dl_ch2 import __version__, distributed
from dl_ch2._checks import resolve_device
from dl_ch2.first_example import build_first_example_model, predict, preprocess, train_first_example
from dl_ch2.naive_model import build_naive_model
from dl_ch2.tools.atomic import atomic_write
from dl_ch2.tools.mnist import load_mnist
from dl_ch2.training_loop import evaluate, fit

__all__ = ["TrainConfig", "run_train"]


@dataclass
class TrainConfig:
    model: str = "both"  # naive | keras | both
    backend: str = "torch"  # torch | numpy
    device: str = "cpu"
    epochs: int | None = None  # None: 10 for naive, 5 for keras (the book's)
    batch_size: int = 128
    learning_rate: float = 1e-3
    seed: int = 0
    out: Path = Path("runs/latest")
    data_root: str | None = None
    figures: bool = True
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


def _train_naive(
    cfg: TrainConfig,
    data: dict[str, Any],
    device: torch.device,
    dp: distributed.DataParallel | None = None,
) -> dict[str, Any]:
    epochs = cfg.epochs or 10
    g = torch.Generator().manual_seed(cfg.seed)
    model = build_naive_model(device=device, generator=g)
    print(
        f"\n== §2.5 from-scratch model: NaiveSequential 784-512-10, SGD lr={cfg.learning_rate}, "
        f"batch {cfg.batch_size}, {epochs} epochs, backend {cfg.backend} =="
    )
    epoch_acc: list[float] = []
    if cfg.backend == "torch":
        x, y = data["train_x_t"], data["train_y_t"]
        history = fit(
            model,
            x,
            y,
            epochs=epochs,
            batch_size=cfg.batch_size,
            learning_rate=cfg.learning_rate,
            on_epoch_end=lambda e, _l: epoch_acc.append(evaluate(model, x, y, 10000)),
            data_parallel=dp,
            progress=False if dp is not None and dp.rank != 0 else None,
        )
        if dp is not None:
            distributed.check_weights_identical(model.weights)
        batch_losses = history.batch_losses
        accuracy = evaluate(model, data["test_x_t"], data["test_y_t"])
        predictions0 = model(data["test_x_t"][:1]).detach().cpu().numpy()[0]
    else:
        import conformance.reference as ref

        rmodel = ref.build_naive_model(dtype=np.float32, rng=np.random.default_rng(0))
        rmodel.set_weights([w.detach().cpu().numpy() for w in model.weights])
        rx, ry = data["train_x"], data["train_y"]
        batch_losses = ref.fit(
            rmodel,
            rx,
            ry,
            epochs=epochs,
            batch_size=cfg.batch_size,
            learning_rate=cfg.learning_rate,
            on_epoch_end=lambda e, _l: epoch_acc.append(ref.evaluate(rmodel, rx, ry, 10000)),
        )
        accuracy = ref.evaluate(rmodel, data["test_x"], data["test_y"])
        predictions0 = rmodel(data["test_x"][:1])[0]
    print(f"accuracy: {accuracy:.2f}")
    return {
        "epochs": epochs,
        "learning_rate": cfg.learning_rate,
        "first_batch_loss": batch_losses[0][0],
        "epoch_loss": [float(np.mean(e)) for e in batch_losses],
        "epoch_train_accuracy": epoch_acc,
        "test_accuracy": accuracy,
        "test_images_0_prediction": int(np.argmax(predictions0)),
        "batch_losses": batch_losses,
    }


def _train_keras(
    cfg: TrainConfig,
    data: dict[str, Any],
    device: torch.device,
    dp: distributed.DataParallel | None = None,
) -> dict[str, Any]:
    epochs = cfg.epochs or 5
    g = torch.Generator().manual_seed(cfg.seed)
    model = build_first_example_model(device=device, generator=g)
    shuffle = torch.Generator().manual_seed(cfg.seed + 1)
    print(
        f"\n== §2.1 first example: Dense 512 relu -> Dense 10 softmax, RMSprop, batch "
        f"{cfg.batch_size}, {epochs} epochs, backend {cfg.backend} =="
    )
    epoch_acc: list[float] = []
    steps = -(-len(data["train_x"]) // cfg.batch_size)

    if cfg.backend == "torch":
        x, y = data["train_x_t"], data["train_y_t"]

        def report(e: int, loss: float) -> None:
            acc = float((predict(model, x).argmax(1) == y).float().mean())
            epoch_acc.append(acc)
            print(f"Epoch {e + 1}/{epochs}: {steps} steps - loss: {loss:.4f} - accuracy: {acc:.4f}")

        losses = train_first_example(
            model,
            x,
            y,
            epochs=epochs,
            batch_size=cfg.batch_size,
            generator=shuffle,
            on_epoch_end=report,
            data_parallel=dp,
        )
        if dp is not None:
            distributed.check_weights_identical(list(model.parameters()))
        probs = predict(model, data["test_x_t"])
        test_acc = float((probs.argmax(1) == data["test_y_t"]).float().mean())
        p0 = probs[0].cpu().numpy()
    else:
        import conformance.reference as ref

        rmodel = ref.FirstExampleModel(dtype=np.float32, rng=np.random.default_rng(0))
        for w, p in zip(rmodel.weights, model.parameters(), strict=True):
            w[...] = p.detach().cpu().numpy()
        x, y = data["train_x"], data["train_y"]

        def report(e: int, loss: float) -> None:
            acc = float((rmodel.predict(x).argmax(1) == y).mean())
            epoch_acc.append(acc)
            print(f"Epoch {e + 1}/{epochs}: {steps} steps - loss: {loss:.4f} - accuracy: {acc:.4f}")

        losses = ref.train_first_example(
            rmodel,
            x,
            y,
            epochs=epochs,
            batch_size=cfg.batch_size,
            rng=_TorchPermutations(shuffle),  # type: ignore[arg-type]
            on_epoch_end=report,
        )
        probs_np = rmodel.predict(data["test_x"])
        test_acc = float((probs_np.argmax(1) == data["test_y"]).mean())
        p0 = probs_np[0]
    print(f"test_acc: {test_acc:.4f}")
    print(f"predictions[0] = {np.array2string(p0, precision=3, suppress_small=True)}")
    print(f"predicted class of test_images[0]: {int(p0.argmax())} (label {int(data['test_y'][0])})")
    return {
        "epochs": epochs,
        "steps_per_epoch": steps,
        "epoch_loss": losses,
        "epoch_train_accuracy": epoch_acc,
        "test_accuracy": test_acc,
        "test_images_0_probabilities": [float(v) for v in p0],
        "test_images_0_prediction": int(p0.argmax()),
    }


def run_train(cfg: TrainConfig) -> dict[str, Any]:
    """Run the main job; returns the metrics written to ``<out>/metrics.json``.

    Under torchrun it joins the process group and trains data-parallel; other ranks run
    silently and write nothing. A failed collective (a peer died or timed out) prints one
    line on stderr and exits with status 1.
    """
    if cfg.model not in ("naive", "keras", "both"):
        raise ValueError(f"model must be naive, keras or both, got {cfg.model!r}")
    if cfg.backend not in ("torch", "numpy"):
        raise ValueError(f"backend must be torch or numpy, got {cfg.backend!r}")
    if not distributed.init_from_env(timeout_s=cfg.dist_timeout):
        return _run_train(cfg, None)
    if cfg.backend != "torch":
        raise ValueError("--backend numpy runs in one process; launch it without torchrun")
    if getattr(cfg, "compile", False):
        raise ValueError(
            "--compile is not supported under torchrun (the gradient all-reduce runs "
            "between autograd and the update); drop --compile or run one process"
        )
    dp = distributed.DataParallel()
    quiet = contextlib.redirect_stdout(io.StringIO()) if dp.rank != 0 else contextlib.nullcontext()
    try:
        with quiet:
            metrics = _run_train(cfg, dp)
    except distributed.DistributedError as exc:
        print(f"dl-ch2: error: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    except RuntimeError as exc:  # gloo / NCCL report a dead or hung peer as RuntimeError
        print(
            f"dl-ch2: error: data-parallel training failed on rank {dp.rank} of "
            f"{dp.world_size} ({distributed.describe(exc)}): a peer died or timed out; "
            "no output was written",
            file=sys.stderr,
        )
        raise SystemExit(1) from None
    distributed.shutdown()
    return metrics


def _run_train(cfg: TrainConfig, dp: distributed.DataParallel | None) -> dict[str, Any]:
    device = resolve_device(cfg.device)
    if dp is not None and device.type == "cuda" and device.index is None:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    start = time.perf_counter()
    (train_images, train_labels), (test_images, test_labels) = load_mnist(cfg.data_root)
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
    data: dict[str, Any] = {
        "train_x": train_x,
        "train_y": train_labels.astype(np.int64),
        "test_x": test_x,
        "test_y": test_labels.astype(np.int64),
    }
    if cfg.backend == "torch":
        data.update(
            train_x_t=torch.from_numpy(train_x).to(device),
            train_y_t=torch.from_numpy(data["train_y"]).to(device),
            test_x_t=torch.from_numpy(test_x).to(device),
            test_y_t=torch.from_numpy(data["test_y"]).to(device),
        )
    metrics: dict[str, Any] = {
        "seed": cfg.seed,
        "backend": cfg.backend,
        "device": str(device),
        "batch_size": cfg.batch_size,
        "versions": _versions(),
        "argv": sys.argv[1:],
    }
    if cfg.model in ("naive", "both"):
        metrics["naive"] = _train_naive(cfg, data, device, dp)
    if cfg.model in ("keras", "both"):
        metrics["keras"] = _train_keras(cfg, data, device, dp)
    metrics["wall_time_s"] = time.perf_counter() - start
    if dp is not None:
        metrics["data_parallel"] = {
            "world_size": dp.world_size,
            "steps": dp.steps,
            "bytes_all_reduced_per_step": dp.bytes_per_step(),
        }
        if dp.rank != 0:  # only rank 0 writes
            return metrics
    out = Path(cfg.out)
    if cfg.figures:
        try:
            from dl_ch2.tools import figures

            written = figures.make_all(
                out,
                train_images,
                train_labels,
                metrics["naive"]["batch_losses"] if "naive" in metrics else None,
            )
            metrics["figures"] = [p.name for p in written]
        except ImportError as exc:
            print(f"(figures skipped: {exc})")
    _write_json_atomic(out / "metrics.json", metrics)
    print(f"\nwrote {out / 'metrics.json'} ({metrics['wall_time_s']:.1f} s)")
    return metrics
