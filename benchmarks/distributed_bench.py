"""Data-parallel epoch time (issue 15): 1 process against N processes under torchrun.

    python benchmarks/distributed_bench.py [--procs 1 2] [--samples 60000] [--epochs 1]
    nox -s bench_distributed -- --procs 1 2

For each process count it trains §2.5's NaiveSequential 784-512-10 with ``fit`` (SGD,
batch 128) and §2.1's first example with ``train_first_example`` (RMSprop, batch 128) on
MNIST-shaped synthetic digits (no download needed), and reports the wall time per epoch
(after a warm-up epoch, the slowest rank's), the steps, and the bytes each rank
all-reduces per step. One process runs plain ``fit``; N > 1 runs ``torchrun --standalone
--nproc-per-node N`` on this same script. Writes ``--out`` (JSON) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from conformance.atomic import atomic_write  # noqa: E402
from dl_ch2 import distributed  # noqa: E402
from dl_ch2.first_example import build_first_example_model, train_first_example  # noqa: E402
from dl_ch2.naive_model import build_naive_model  # noqa: E402
from dl_ch2.training_loop import fit  # noqa: E402
from dl_ch2_tools.cli import synthetic_digits  # noqa: E402


def _timed_epochs(args: argparse.Namespace, dp: distributed.DataParallel | None) -> dict[str, Any]:
    cpu = torch.device("cpu")
    x, y = synthetic_digits(args.samples, generator=torch.Generator().manual_seed(0), device=cpu)
    naive = build_naive_model(generator=torch.Generator().manual_seed(1))
    keras = build_first_example_model(generator=torch.Generator().manual_seed(1))
    opt = torch.optim.RMSprop(keras.parameters(), lr=1e-3, alpha=0.9, eps=1e-7)
    shuffle = torch.Generator().manual_seed(2)

    def epoch_of(name: str) -> None:
        if name == "naive":
            fit(
                naive,
                x,
                y,
                epochs=1,
                batch_size=args.batch_size,
                shuffle=True,
                generator=shuffle,
                print_fn=None,
                progress=False,
                data_parallel=dp,
            )
        else:
            train_first_example(
                keras,
                x,
                y,
                epochs=1,
                batch_size=args.batch_size,
                optimizer=opt,
                generator=shuffle,
                data_parallel=dp,
            )

    result: dict[str, Any] = {}
    for name in ("naive", "keras"):
        times: list[float] = []
        steps_before = dp.steps if dp is not None else 0
        bytes_before = dp.bytes_all_reduced if dp is not None else 0
        for epoch in range(args.epochs + 1):  # epoch 0 is a warm-up
            if dp is not None:
                torch.distributed.barrier()
            start = time.perf_counter()
            epoch_of(name)
            if dp is not None:
                torch.distributed.barrier()  # the epoch ends when the slowest rank is done
            if epoch > 0:
                times.append(time.perf_counter() - start)
        entry: dict[str, Any] = {"epoch_s": times, "median_epoch_s": sorted(times)[len(times) // 2]}
        if dp is not None:
            steps = dp.steps - steps_before
            entry["steps"] = steps
            entry["bytes_all_reduced_per_step"] = (dp.bytes_all_reduced - bytes_before) / steps
        result[name] = entry
    return result


def _all_reduce_ms(numel: int, repeats: int = 50) -> float:
    """Median wall time of one all_reduce(SUM) of ``numel`` float32 (the gradient buffer)."""
    buf = torch.ones(numel)
    times = []
    for _ in range(repeats):
        torch.distributed.barrier()
        start = time.perf_counter()
        torch.distributed.all_reduce(buf)
        times.append(time.perf_counter() - start)
    return 1000 * sorted(times)[len(times) // 2]


def _worker(args: argparse.Namespace) -> None:
    distributed.init_from_env()
    dp = distributed.DataParallel()
    result = _timed_epochs(args, dp)
    # the naive model's gradients: 784*512 + 512 + 512*10 + 10 = 407,050 float32
    result["all_reduce_ms_of_the_gradients"] = _all_reduce_ms(407_050)
    if dp.rank == 0:
        atomic_write(Path(args.worker_out), json.dumps(result))
    distributed.shutdown()


def _run(nproc: int, args: argparse.Namespace) -> dict[str, Any]:
    if nproc == 1:
        return _timed_epochs(args, None)
    # torchrun gives each worker OMP_NUM_THREADS=1 (it warns that it does so)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node",
            str(nproc),
            __file__,
            "--worker-out",
            str(out),
            "--samples",
            str(args.samples),
            "--epochs",
            str(args.epochs),
            "--batch-size",
            str(args.batch_size),
        ]
        path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
        env = {**os.environ, "PYTHONPATH": path}
        subprocess.run(cmd, check=True, env=env)
        result: dict[str, Any] = json.loads(out.read_text())
        return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--procs", type=int, nargs="+", default=[1, 2])
    parser.add_argument(
        "--threads",
        type=int,
        nargs="+",
        default=[1, os.cpu_count() or 1],
        help="intra-op threads for the one-process runs (torchrun's workers use 1 each)",
    )
    parser.add_argument("--samples", type=int, default=60000)
    parser.add_argument("--epochs", type=int, default=1, help="timed epochs after a warm-up")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--out", default="bench-out/distributed.json")
    parser.add_argument("--worker-out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker_out:
        _worker(args)
        return 0
    report: dict[str, Any] = {
        "cpu_count": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "load_average_at_start": list(os.getloadavg()),
        "samples": args.samples,
        "batch_size": args.batch_size,
        "runs": {},
    }
    for nproc in args.procs:
        if nproc == 1:
            for threads in dict.fromkeys(args.threads):
                torch.set_num_threads(threads)
                report["runs"][f"1 process x {threads} thread(s)"] = _run(1, args)
        else:
            report["runs"][f"{nproc} processes x 1 thread"] = _run(nproc, args)
    report["load_average_at_end"] = list(os.getloadavg())
    atomic_write(Path(args.out), json.dumps(report, indent=2) + "\n")
    print(f"{'run':>26} {'model':>6} {'epoch s':>9} {'bytes/step':>11}")
    for label, runs in report["runs"].items():
        for name, entry in runs.items():
            if not isinstance(entry, dict):
                print(f"{label:>26} {name}: {entry:.2f}")
                continue
            b = entry.get("bytes_all_reduced_per_step", 0)
            print(f"{label:>26} {name:>6} {entry['median_epoch_s']:>9.2f} {b:>11,.0f}")
    print(f"load average: {report['load_average_at_start']} -> {report['load_average_at_end']}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
