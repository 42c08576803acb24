"""Throughput of ``grade-all``: a class of submissions graded on this machine (issue 13).

Makes N self-contained submissions, as students hand them in (copies of the worked student
example, of the book-style submission and of the student-bug fixtures, each with a unique
comment so none is skipped as already graded), grades them with
``conformance.grading.grade_all.grade_all`` (``--jobs`` at a time; as root each runs in the
unprivileged worker) and reports the wall time, the time per submission, the core-seconds
per submission (CPU time of all child processes), and where a grade's time goes:
interpreter starts, imports, specs. The target (issue 21): 200 submissions in <= 15 minutes
on 2 cores.

Usage: python benchmarks/grade_all_throughput.py [--n 200] [--jobs 2] [--out DIR]
Writes DIR/throughput.json and DIR/throughput.md; DIR/run holds the gradebook.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from conformance.atomic import atomic_write
from conformance.grading.grade_all import default_jobs, grade_all
from conformance.grading.rubric import load_rubric

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
STUDENT = ROOT / "conformance" / "examples" / "student_numpy.py"
BOOK_STYLE = ROOT / "tests" / "fixtures" / "book_style.py"
BUGS = ROOT / "tests" / "fixtures" / "student_bugs"
#: Interpreters one grade starts: the ``python -m conformance grade`` process, the pytest
#: process and the grade's one worker (issue 31: no metadata probe's worker before it); as
#: root, the worker is started by a launcher (a short-lived interpreter) inside ``unshare``.
INTERPRETERS_PER_GRADE = 4 if os.geteuid() == 0 else 3
#: Of those, the ones that import the full grader stack (pytest, hypothesis, the plugin,
#: the reference, NumPy): the pytest process; the rest import NumPy (and the submission).
FULL_IMPORTS_PER_GRADE = 1


def make_submissions(folder: Path, n: int) -> dict[str, int]:
    """N submissions cycling through the student example, the book-style one and the bugs."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    kinds: dict[str, int] = {"student": 0, "book_style": 0, "bug": 0}
    bugs = tomllib.loads((BUGS / "bugs.toml").read_text())["bug"]
    correct = (BUGS / "correct.py").read_text()
    for i in range(n):
        sub = folder / f"s{i:04d}"
        sub.mkdir()
        kind = ("student", "book_style", "bug")[i % 3]
        if kind == "student":
            text = STUDENT.read_text()
        elif kind == "book_style":
            text = BOOK_STYLE.read_text()
        else:
            bug = bugs[(i // 3) % len(bugs)]
            text = correct.replace(bug["old"], bug["new"])
        (sub / "adapter.py").write_text(f"# submission {i} ({kind})\n{text}")
        kinds[kind] += 1
    return kinds


def _time(cmd: list[str], repeats: int, env: dict[str, str]) -> float:
    """Median CPU seconds (user + system) of running ``cmd``: robust to a shared machine."""
    samples = []
    for _ in range(repeats):
        before = _children_cpu()
        subprocess.run(cmd, check=True, env=env, capture_output=True)
        samples.append(_children_cpu() - before)
    return statistics.median(samples)


def overheads(repeats: int = 5) -> dict[str, float]:
    """Median CPU seconds of an interpreter start and of the grader's imports."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    start = _time([sys.executable, "-c", "pass"], repeats, env)
    light = _time([sys.executable, "-c", "import numpy, conformance.adapter"], repeats, env)
    full = _time(
        [
            sys.executable,
            "-c",
            "import numpy, pytest, hypothesis, conformance.plugin, conformance.adapters.numpy_ref",
        ],
        repeats,
        env,
    )
    return {
        "interpreter_start_s": start,
        "imports_light_s": max(0.0, light - start),
        "imports_full_s": max(0.0, full - start),
    }


def _children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200, help="submissions (default 200)")
    parser.add_argument("--jobs", type=int, default=None, help="default: the cores")
    parser.add_argument("--out", default="bench-out/grade-all")
    parser.add_argument("--target-n", type=int, default=200)
    parser.add_argument("--target-cores", type=int, default=2)
    args = parser.parse_args(argv)
    if args.n < 1:
        parser.error("--n must be >= 1")
    jobs = args.jobs or default_jobs()
    out = Path(args.out)
    subs, run_dir = out / "submissions", out / "run"
    kinds = make_submissions(subs, args.n)
    if run_dir.exists():
        shutil.rmtree(run_dir)

    cpu0, t0 = _children_cpu(), time.perf_counter()
    rows = grade_all(subs, run_dir, load_rubric(), jobs=jobs, progress=True)
    wall = time.perf_counter() - t0
    core_s = _children_cpu() - cpu0
    over = overheads()

    per_wall = [r.elapsed_s for r in rows]
    core_per_sub = core_s / args.n
    starts = INTERPRETERS_PER_GRADE * over["interpreter_start_s"]
    imports = (
        FULL_IMPORTS_PER_GRADE * over["imports_full_s"]
        + (INTERPRETERS_PER_GRADE - FULL_IMPORTS_PER_GRADE) * over["imports_light_s"]
    )
    specs = max(0.0, core_per_sub - starts - imports)
    projected_wall = core_per_sub * args.target_n / args.target_cores
    result: dict[str, Any] = {
        "n": args.n,
        "kinds": kinds,
        "jobs": jobs,
        "cpus_available": default_jobs(),
        "load_average_1m": os.getloadavg()[0],
        "wall_s": wall,
        "wall_per_submission_s": wall / args.n,
        "grade_wall_s": {
            "median": statistics.median(per_wall),
            "max": max(per_wall),
        },
        "core_s_per_submission": core_per_sub,
        "breakdown_core_s_per_submission": {
            "interpreter_starts": starts,
            "imports": imports,
            "specs_and_rest": specs,
        },
        "overheads": over,
        "statuses": {
            s: sum(1 for r in rows if r.status == s) for s in ("ok", "incomplete", "error")
        },
        "projection": {
            "submissions": args.target_n,
            "cores": args.target_cores,
            "wall_s_from_core_s": projected_wall,
            "target_wall_s": 15 * 60,
        },
    }
    md = "\n".join(
        [
            f"# grade-all throughput: {args.n} submissions, --jobs {jobs}",
            "",
            f"kinds: {kinds}; statuses: {result['statuses']}; "
            f"1-minute load average at the end: {result['load_average_1m']:.1f} "
            f"on {result['cpus_available']} cores",
            "",
            "| measure | value |",
            "| --- | --- |",
            f"| wall, whole batch | {wall:.1f} s |",
            f"| wall per submission (batch / n) | {wall / args.n:.2f} s |",
            f"| one grade's wall, median / max | {statistics.median(per_wall):.1f} / "
            f"{max(per_wall):.1f} s |",
            f"| core-seconds per submission (CPU of all children) | {core_per_sub:.2f} |",
            f"| of which interpreter starts ({INTERPRETERS_PER_GRADE} x "
            f"{over['interpreter_start_s']:.3f} s) | {starts:.2f} |",
            f"| of which imports ({FULL_IMPORTS_PER_GRADE} x {over['imports_full_s']:.2f} s full "
            f"+ {INTERPRETERS_PER_GRADE - FULL_IMPORTS_PER_GRADE} x "
            f"{over['imports_light_s']:.2f} s light) | {imports:.2f} |",
            f"| of which specs and the rest | {specs:.2f} |",
            f"| projected wall for {args.target_n} on {args.target_cores} cores "
            f"(core-s x n / cores) | {projected_wall / 60:.1f} min (target 15 min) |",
            "",
            "Starts and imports are the CPU time of separate `python -c` runs (median of 5);",
            "the specs' share is the rest of the CPU measured over the batch.",
            "",
        ]
    )
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "throughput.json", json.dumps(result, indent=1) + "\n")
    atomic_write(out / "throughput.md", md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
