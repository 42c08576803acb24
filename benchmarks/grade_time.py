"""What one grade costs on this machine (issue 27, issue 31 item 4): wall and CPU time.

Times, interleaved round by round (so a busy neighbour slows every case alike), the grades a
course runs most:

- ``dl-ch2 grade numpy``: the NumPy reference (it trains the first example on MNIST);
- ``dl-ch2 grade book_style.py``: a student's .py graded by the book's names, no adapter;
- the seed's copy of the 2nd-edition notebook (TensorFlow, ``../shared/seeds/001_*.txt``) and
  our TensorFlow book-style notebook, graded as written with the default course rubric
  (``python -m conformance grade X.ipynb --rubric conformance/grading/rubric.default.toml``);
  skipped, and said so, without TensorFlow.

Each case runs ``--repeats`` times (median reported). CPU time is user + system of the whole
process tree (the grader, pytest, the launcher, the sandboxed worker), sampled with psutil
every 50 ms: a worker killed at the end of a grade is never waited for by its parent, so
``getrusage(RUSAGE_CHILDREN)`` would miss it. Report the load average beside the numbers.

Usage: python benchmarks/grade_time.py [--repeats 3] [--out bench-out] [--only numpy,...]
Writes OUT/grade_time.json and prints a Markdown table (docs/performance.md, grade timings).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent
RUBRIC = ROOT / "conformance" / "grading" / "rubric.default.toml"
CASES = ("numpy", "book_style_py", "tf_seed_notebook", "tf_book_notebook")


def _dl_ch2() -> list[str]:
    """The ``dl-ch2`` command of this interpreter's environment."""
    exe = Path(sys.executable).with_name("dl-ch2")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "dl_ch2_tools.cli"]


def prepare(folder: Path) -> dict[str, tuple[list[str], Path] | str]:
    """Each case's command and working folder, or why it is skipped."""
    sys.path.insert(0, str(ROOT / "tests"))
    from fixtures.book_notebooks import SEEDS, book_cells, seed_cells, write_notebook

    cases: dict[str, tuple[list[str], Path] | str] = {}
    for name in CASES:
        (folder / name).mkdir(parents=True, exist_ok=True)
    cases["numpy"] = ([*_dl_ch2(), "grade", "numpy"], folder / "numpy")
    shutil.copyfile(ROOT / "tests" / "fixtures" / "book_style.py",
                    folder / "book_style_py" / "book_style.py")  # fmt: skip
    cases["book_style_py"] = ([*_dl_ch2(), "grade", "book_style.py"], folder / "book_style_py")
    if importlib.util.find_spec("tensorflow") is None:
        cases["tf_seed_notebook"] = cases["tf_book_notebook"] = "TensorFlow is not installed"
        return cases
    course = [sys.executable, "-m", "conformance", "grade", "chapter02.ipynb", "--rubric",
              str(RUBRIC)]  # fmt: skip
    seed = sorted(SEEDS.glob("001_*.txt"))
    if seed:
        write_notebook(
            seed_cells(seed[0].read_text()), folder / "tf_seed_notebook" / "chapter02.ipynb"
        )
        cases["tf_seed_notebook"] = (course, folder / "tf_seed_notebook")
    else:
        cases["tf_seed_notebook"] = f"no seed notebook in {SEEDS}"
    write_notebook(book_cells("tf"), folder / "tf_book_notebook" / "chapter02.ipynb")
    cases["tf_book_notebook"] = (course, folder / "tf_book_notebook")
    return cases


def run_once(cmd: list[str], cwd: Path, code: Path | None = None) -> dict[str, float]:
    """One grade: its wall time, its process tree's CPU time, its exit code. ``code``: a
    checkout whose ``conformance`` and ``dl_ch2_tools`` run instead of this one's."""
    env = dict(os.environ)
    if code is not None:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(code), env.get("PYTHONPATH")) if p)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=env)  # fmt: skip
    cpu: dict[int, float] = {}
    root = psutil.Process(proc.pid)
    while proc.poll() is None:
        try:
            tree = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            tree = []
        for p in tree:
            try:
                t = p.cpu_times()
                cpu[p.pid] = max(cpu.get(p.pid, 0.0), t.user + t.system)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass
        time.sleep(0.05)
    wall = time.perf_counter() - t0
    return {"wall_s": wall, "cpu_s": sum(cpu.values()), "exit": float(proc.returncode)}


def measure(cases: dict[str, Any], repeats: int, baseline: Path | None) -> dict[str, Any]:
    if baseline is not None:  # each case run with the baseline's code too, in the same rounds
        for name, case in list(cases.items()):
            cases[f"{name} (baseline)"] = case if isinstance(case, str) else (*case, baseline)
    runs: dict[str, list[dict[str, float]]] = {
        n: [] for n, c in cases.items() if not isinstance(c, str)
    }
    for _ in range(repeats):  # interleaved: one of each case per round
        for name in runs:
            runs[name].append(run_once(*cases[name]))
    out: dict[str, Any] = {}
    for name, case in cases.items():
        if isinstance(case, str):
            out[name] = {"skipped": case}
            continue
        walls = [r["wall_s"] for r in runs[name]]
        cpus = [r["cpu_s"] for r in runs[name]]
        out[name] = {
            "command": _shown(case[0]),
            "wall_s": walls,
            "cpu_s": cpus,
            "exit": sorted({int(r["exit"]) for r in runs[name]}),
            "wall_median_s": statistics.median(walls),
            "cpu_median_s": statistics.median(cpus),
        }
    return out


def _shown(cmd: list[str]) -> str:
    """The command as a reader types it (``python``, ``dl-ch2``, paths from the checkout)."""
    words = ["python" if c == sys.executable else Path(c).name if c.endswith("dl-ch2") else c
             for c in cmd]  # fmt: skip
    return " ".join(words).replace(str(ROOT) + "/", "")


def table(result: dict[str, Any]) -> str:
    lines = [
        "| grade | command | wall median (min-max) | CPU median | exit |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, r in result["cases"].items():
        if "skipped" in r:
            lines.append(f"| {name} | skipped: {r['skipped']} | | | |")
            continue
        lines.append(
            f"| {name} | `{r['command']}` | {r['wall_median_s']:.1f} s "
            f"({min(r['wall_s']):.1f}-{max(r['wall_s']):.1f}) | {r['cpu_median_s']:.1f} s | "
            f"{', '.join(map(str, r['exit']))} |"
        )
    load = ", ".join(f"{x:.2f}" for x in result["load_before"])
    lines.append(
        f"\n{result['repeats']} interleaved rounds, {result['when']}, git {result['git']}, "
        f"{result['cpus']} CPUs, load average before: {load}, after: "
        + ", ".join(f"{x:.2f}" for x in result["load_after"])
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="rounds (median of these)")
    parser.add_argument("--out", default="bench-out", help="folder for grade_time.json")
    parser.add_argument("--only", default="", help=f"comma-separated cases of {CASES}")
    parser.add_argument(
        "--baseline",
        default=None,
        help="a checkout (e.g. `git worktree add /tmp/base main`) whose conformance and "
        "dl_ch2_tools are timed too, interleaved, with this environment's libraries",
    )
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats must be at least 1, got {args.repeats}")
    only = [c for c in args.only.split(",") if c]
    unknown = sorted(set(only) - set(CASES))
    if unknown:
        parser.error(f"--only: unknown case(s) {unknown}; choose from {CASES}")
    with tempfile.TemporaryDirectory(prefix="dl-ch2-grade-time-") as tmp:
        cases = {k: v for k, v in prepare(Path(tmp)).items() if not only or k in only}
        load_before = os.getloadavg()
        base = Path(args.baseline).resolve() if args.baseline else None
        measured = measure(cases, args.repeats, base)
    git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                         text=True).stdout.strip()  # fmt: skip
    result = {
        "cases": measured, "repeats": args.repeats, "load_before": list(load_before),
        "load_after": list(os.getloadavg()), "cpus": os.cpu_count(), "git": git,
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "baseline": args.baseline,
        "python": platform.python_version(),
        "command": "python benchmarks/grade_time.py " + " ".join(argv or sys.argv[1:]),
    }  # fmt: skip
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    from conformance.atomic import atomic_write

    atomic_write(out / "grade_time.json", json.dumps(result, indent=1) + "\n")
    print(table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
