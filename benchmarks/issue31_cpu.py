"""Issue 31's ratios in one-thread CPU time, which a shared machine disturbs less than wall time.

Run: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/issue31_cpu.py [samples] [rounds]``.
Each round runs every candidate for 2 epochs (order rotating); after each candidate epoch a
GEMM-floor epoch is timed, and the epoch's ratio is its process CPU time over the floor's.
The compiled fit has compiled once in the warm-up, so each round's first epoch is what a
later compiled fit pays (it should reuse the compilation). Medians over rounds are printed
with the load average.
"""

from __future__ import annotations

import os
import statistics
import sys
import time

import torch

from dl_ch2_tools.bench import CANDIDATES, gemm_floor_epoch, synthetic_mnist

NAMES = ["book_fit", "compiled_fit", "idiomatic", "numpy_reference", "first_example_compiled"]


def main() -> None:
    samples = int(sys.argv[1]) if len(sys.argv) > 1 else 30000
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    torch.set_num_threads(1)
    dev = torch.device("cpu")
    x, y = synthetic_mnist(dev, n=samples)
    floor = gemm_floor_epoch(dev, samples)
    print(f"load before: {os.getloadavg()}", flush=True)
    for name in NAMES:  # warm-up: the compiled ones compile here
        CANDIDATES[name][0](x, y, 99, 1, lambda: None)
    ratios: dict[str, list[list[float]]] = {n: [] for n in NAMES}
    for r in range(rounds):
        for name in NAMES[r % len(NAMES) :] + NAMES[: r % len(NAMES)]:
            got: list[float] = []
            start = [time.process_time()]

            def after_epoch(got: list[float] = got, start: list[float] = start) -> None:
                epoch = time.process_time() - start[0]
                t0 = time.process_time()
                floor()
                got.append(epoch / (time.process_time() - t0))
                start[0] = time.process_time()

            CANDIDATES[name][0](x, y, r, 2, after_epoch)
            ratios[name].append(got)
        print(f"round {r + 1}/{rounds} done, load {os.getloadavg()[0]:.2f}", flush=True)
    for name in NAMES:
        per = [statistics.median(rnd[e] for rnd in ratios[name]) for e in range(2)]
        rounds_txt = "; ".join(", ".join(f"{v:.2f}" for v in rnd) for rnd in ratios[name])
        print(
            f"{name:24s} x floor (CPU, 1 thread): epoch 1 {per[0]:.2f}, epoch 2 {per[1]:.2f}"
            f"  [rounds: {rounds_txt}]"
        )
    print(f"load after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
