"""``python -m conformance grade ADAPTER [options] [-- pytest args]``: grade an implementation.

Runs the specs shipped in this package with pytest; needs no clone and no torch (unless the
adapter itself uses it). ``ADAPTER`` is numpy, torch-cpu, torch-cuda, a module[:attr] or a
path/to/adapter.py.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path


def grade(
    adapter: str,
    dtype: str | None = None,
    report_json: str | None = None,
    report_md: str | None = None,
    jobs: int | None = None,
    extra: Sequence[str] = (),
) -> int:
    import pytest

    here = Path(__file__).parent
    args = [
        str(here / "specs"),
        "--rootdir",
        str(here),
        "-p",
        "no:cacheprovider",
        "--impl",
        adapter,
    ]
    if dtype:
        args += ["--dtype", dtype]
    if report_json:
        args += ["--report-json", report_json]
    if report_md:
        args += ["--report-md", report_md]
    if jobs:
        args += ["-n", str(jobs)]
    return int(pytest.main([*args, *extra]))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m conformance",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    g = sub.add_parser("grade", help="grade an implementation")
    g.add_argument("adapter")
    g.add_argument("--dtype", choices=["float32", "float64"])
    g.add_argument("--report-json")
    g.add_argument("--report-md")
    g.add_argument("-n", "--jobs", type=int, help="parallel workers (pytest-xdist)")
    g.add_argument("pytest_args", nargs="*", help="after --: passed to pytest")
    sub.add_parser("mutants", help="run the negative controls (the kill matrix)")
    from conformance import classroom_cli  # course staff: --gradescope, bundle, grade-all

    classroom_cli.add_gradescope_options(g)
    classroom_cli.register(sub)
    args, rest = parser.parse_known_args(argv)
    handled = classroom_cli.dispatch(args)
    if handled is not None:
        return handled
    if args.command == "mutants":
        from conformance.mutants import main as mutants_main

        return mutants_main(rest)
    return grade(
        args.adapter,
        args.dtype,
        args.report_json,
        args.report_md,
        args.jobs,
        [*args.pytest_args, *rest],
    )


if __name__ == "__main__":
    sys.exit(main())
