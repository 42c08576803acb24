"""Headline numbers of the chapter for several seeds and both backends (a report, not a test).

Usage: python benchmarks/headline.py [--seeds 0 1 2] [--backends torch numpy] [--out DIR]
Writes DIR/headline.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import time
from pathlib import Path

from dl_ch2_tools.main_job import TrainConfig, run_train


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--backends", nargs="+", default=["torch", "numpy"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default="runs/headline")
    args = parser.parse_args()
    out = Path(args.out)
    rows = []
    for backend in args.backends:
        for seed in args.seeds:
            start = time.perf_counter()
            with contextlib.redirect_stdout(io.StringIO()):
                m = run_train(
                    TrainConfig(
                        backend=backend,
                        device=args.device,
                        seed=seed,
                        out=out / f"{backend}-seed{seed}",
                        figures=False,
                        force=True,  # a re-run of the report replaces its own runs
                    )
                )
            rows.append(
                {
                    "backend": backend,
                    "seed": seed,
                    "naive_first_batch_loss": m["naive"]["first_batch_loss"],
                    "naive_test_accuracy": m["naive"]["test_accuracy"],
                    "keras_test_accuracy": m["keras"]["test_accuracy"],
                    "wall_time_s": time.perf_counter() - start,
                }
            )
            print(rows[-1], flush=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / "headline.json").write_text(json.dumps(rows, indent=2) + "\n")
    print(
        "\n| backend | seed | first-batch loss | from-scratch acc (10 ep) "
        "| first-example acc (5 ep) | wall s |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(
            f"| {r['backend']} | {r['seed']} | {r['naive_first_batch_loss']:.2f} | "
            f"{r['naive_test_accuracy']:.4f} | {r['keras_test_accuracy']:.4f} | "
            f"{r['wall_time_s']:.0f} |"
        )


if __name__ == "__main__":
    main()
