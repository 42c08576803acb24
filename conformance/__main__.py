"""``python -m conformance grade ADAPTER [options] [-- pytest args]``: grade an implementation.

Runs the specs shipped in this package with pytest; the implementation runs in a worker
process of its own, unprivileged when the grader is root (see conformance/grading/runner.py and
conformance/grading/); needs no clone and no torch (unless the adapter itself uses it).
``ADAPTER`` is numpy, torch-cpu, torch-cuda, a module[:attr], a path/to/adapter.py, or a
submission folder (its adapter found as on Gradescope; the folder is on its import path).

Exit codes: 0 complete and every claimed spec passed; 1 complete with failures; 2 usage error
(bad path, bad adapter metadata, bad option); 3 incomplete (interrupted, out of budget or out
of worker restarts: the specs not run are listed and count as not passed).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from conformance.grading.runner import (
    DEFAULT_BUDGET,
    DEFAULT_MAX_WORKER_RESTART,
    DEFAULT_MEMORY_LIMIT_GIB,
    DEFAULT_SPEC_TIMEOUT,
    grade,
)

__all__ = ["add_grade_arguments", "grade", "grade_from_args", "main"]


def add_grade_arguments(g: argparse.ArgumentParser) -> None:
    """The options of ``grade``, shared with ``dl-ch2 grade``."""
    g.add_argument(
        "adapter", help="numpy, torch-cpu, torch-cuda, module[:attr], file.py or a folder"
    )
    g.add_argument("--dtype", choices=["float32", "float64"])
    g.add_argument("--report-json", help="write the report card as JSON here")
    g.add_argument("--report-md", help="write the Markdown summary here")
    g.add_argument(
        "-n",
        "--jobs",
        type=int,
        default=None,
        help="grading processes, each with a worker of its own (pytest-xdist; default 1)",
    )
    g.add_argument(
        "--spec-timeout",
        type=float,
        default=None,
        help=f"seconds per spec (default {DEFAULT_SPEC_TIMEOUT:g}; slow specs have their own)",
    )
    g.add_argument(
        "--budget",
        type=float,
        default=None,
        help=f"seconds for the whole grade (default {DEFAULT_BUDGET:g}; with a rubric, its own)",
    )
    g.add_argument(
        "--max-worker-restart",
        type=int,
        default=None,
        help=f"worker losses (crashes, timeouts) tolerated (default {DEFAULT_MAX_WORKER_RESTART})",
    )
    g.add_argument(
        "--allow",
        action="append",
        default=[],
        metavar="PACKAGE",
        help="a library the submission may import besides numpy (e.g. torch; repeatable)",
    )
    g.add_argument(
        "--hide",
        action="append",
        default=[],
        metavar="PATH",
        help="a path the submission must not see (repeatable; as root)",
    )
    g.add_argument(
        "--memory-limit",
        type=float,
        default=None,
        help=f"GiB of data memory per worker, 0 for none (default {DEFAULT_MEMORY_LIMIT_GIB:g})",
    )
    g.add_argument("pytest_args", nargs="*", help="after --: passed to pytest")


def grade_from_args(args: argparse.Namespace, rest: Sequence[str] = ()) -> int:
    """Run ``grade`` from parsed options; ``rest`` (pytest's own options) may start with --."""
    extra = [*args.pytest_args, *rest]
    if "--" in extra:
        extra.remove("--")
    adapter, folder = args.adapter, None
    if Path(adapter).is_dir():  # a submission folder, as on Gradescope
        from conformance.grading.gradescope import find_adapter

        try:
            adapter, folder = str(find_adapter(Path(adapter))), adapter
        except ValueError as exc:
            print(f"conformance grade: error: {exc}", file=sys.stderr)
            return 2
    return grade(
        adapter,
        args.dtype,
        args.report_json,
        args.report_md,
        args.jobs,
        extra,
        spec_timeout=args.spec_timeout,
        budget=args.budget,
        max_worker_restart=args.max_worker_restart,
        memory_limit_gib=args.memory_limit,
        packages=["numpy", *args.allow],
        hide=args.hide,
        folder=folder,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m conformance",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    g = sub.add_parser("grade", help="grade an implementation")
    add_grade_arguments(g)
    sub.add_parser("mutants", help="run the negative controls (the kill matrix)")
    from conformance.grading import (
        cli as classroom_cli,
    )  # course staff: --gradescope, bundle, grade-all

    classroom_cli.add_gradescope_options(g)
    classroom_cli.register(sub)
    args, rest = parser.parse_known_args(argv)
    handled = classroom_cli.dispatch(args, rest)
    if handled is not None:
        return handled
    if args.command == "mutants":
        from conformance.mutants import main as mutants_main

        return mutants_main(rest)
    return grade_from_args(args, rest)


if __name__ == "__main__":
    sys.exit(main())
