"""What array identity on the wire costs (issue 27.7a): the grader's encoding, and a grade.

    python benchmarks/wire_identity.py [--ref 545377c] [--rounds 3] [--impl numpy]

1. Encoding: ``wire.encode`` of one array as before (a fresh copy each send) against the
   identity table (``wire.Sent``: a checksum at each send; a repeat of an unchanged array
   is a token), for arrays of 8 KB, 8 MB and 188 MB (MNIST's training images in float32).
2. A whole grade: ``python -m conformance grade IMPL`` from this checkout and from ``--ref``
   (extracted with ``git archive``), interleaved, ``--rounds`` times each: wall time and the
   CPU time (user + sys) of the grade's process tree. Prints the load average beside it.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from conformance.grading import wire  # noqa: E402


def _best(fn: object, repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append(time.perf_counter() - t)
    return min(times)


def encoding() -> None:
    print("| array | plain encode | first send (Sent) | repeat, unchanged (Sent) |")
    print("|---|---|---|---|")
    for shape, dtype in (((32, 32), "float64"), ((1024, 1024), "float64"),
                         ((60000, 784), "float32")):  # fmt: skip
        a = np.ones(shape, dtype=dtype)
        plain = _best(lambda a=a: wire.encode(a, []))
        first = _best(lambda a=a: wire.encode(wire.Sent().share(a, "x"), []))
        sent = wire.Sent()
        wire.encode(sent.share(a, "x"), [])
        again = _best(lambda a=a, sent=sent: wire.encode(sent.share(a, "x"), []))
        mb = a.nbytes / 2**20
        print(f"| {shape} {dtype} ({mb:.2f} MB) | {plain * 1e3:.3f} ms | "
              f"{first * 1e3:.3f} ms | {again * 1e3:.3f} ms |")  # fmt: skip


def _grade(src: Path, impl: str) -> tuple[float, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "conformance", "grade", impl],
                          cwd=src, capture_output=True, text=True)  # fmt: skip
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"grade in {src} exited {proc.returncode}: {proc.stdout[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def grades(ref: str, rounds: int, impl: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        old = Path(tmp, "ref")
        old.mkdir()
        archive = subprocess.run(["git", "archive", ref], cwd=ROOT, capture_output=True,
                                 check=True).stdout  # fmt: skip
        subprocess.run(["tar", "-x", "-C", str(old)], input=archive, check=True)
        runs: dict[str, list[tuple[float, float]]] = {ref: [], "this checkout": []}
        for _ in range(rounds):
            runs[ref].append(_grade(old, impl))
            runs["this checkout"].append(_grade(ROOT, impl))
    print(f"\nload average {os.getloadavg()[0]:.2f} (1 min); {rounds} interleaved rounds")
    print("| code | median wall s | median CPU s (user + sys) |")
    print("|---|---|---|")
    for name, rs in runs.items():
        wall = statistics.median(r[0] for r in rs)
        cpu = statistics.median(r[1] for r in rs)
        print(f"| {name} | {wall:.2f} | {cpu:.2f} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ref", default="545377c", help="the code to compare with (a git ref)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--impl", default="numpy")
    p.add_argument("--no-grade", action="store_true", help="the encoding table only")
    args = p.parse_args()
    encoding()
    if not args.no_grade:
        grades(args.ref, args.rounds, args.impl)


if __name__ == "__main__":
    main()
