"""The course-staff subcommands, shared by ``python -m conformance`` and ``dl-ch2``.

- ``grade ADAPTER --gradescope PATH [--rubric R]``: also write Gradescope's results.json;
- ``gradescope-bundle [--rubric R] -o autograder.zip [--wheel W | --source DIR]``: the
  autograder zip, its wheel built from the checkout it is run in (or DIR);
- ``grade-all SUBMISSIONS --out DIR [--rubric R] [--jobs N]``: grade a folder;
- ``gradescope-run [--root /autograder]``: what the bundle's run_autograder runs;
- ``starter [--rubric R] [--template book|adapter] [--format py|ipynb] -o PATH``: the
  student starter (the book's blank cells, or every verb and the adapter).

Light at import (argparse only): the work is imported when a subcommand runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_gradescope_options", "register", "run_gradescope_grade"]


def add_gradescope_options(grade: argparse.ArgumentParser) -> None:
    """Add ``--gradescope PATH`` and ``--rubric PATH`` to a ``grade`` subcommand."""
    grade.add_argument(
        "--gradescope",
        metavar="PATH",
        help="also write Gradescope's results.json here (points from --rubric)",
    )
    grade.add_argument(
        "--rubric",
        metavar="PATH",
        help="grade as a course does (course mode): print the rubric's score, the rubric's "
        "budget and timeouts unless given (default rubric with --gradescope: the course's)",
    )


def course_mode(args: argparse.Namespace) -> bool:
    """``grade`` with ``--gradescope`` or ``--rubric``: scored by a rubric, as a course does."""
    return bool(getattr(args, "gradescope", None) or getattr(args, "rubric", None))


def run_gradescope_grade(args: argparse.Namespace) -> int:
    """``grade ADAPTER --rubric R [--gradescope PATH]``: grade in a child process, print the
    rubric's score, write results.json. Every option of ``grade`` applies (and shows on the
    card) but pytest's own arguments, which would change what the score counts: refused."""
    from conformance.grading.gradescope import GradeOptions, grade_to_gradescope
    from conformance.grading.rubric import load_rubric

    if getattr(args, "pytest_args", None):
        raise ValueError(
            f"pytest arguments {args.pytest_args} are refused with --rubric/--gradescope: "
            "a course grade counts every spec of the assignment (narrow it in the rubric)"
        )
    options = GradeOptions(
        budget=getattr(args, "budget", None),
        memory_limit_gib=getattr(args, "memory_limit", None),
        max_worker_restart=getattr(args, "max_worker_restart", None),
        allow=tuple(getattr(args, "allow", None) or ()),
        hide=tuple(getattr(args, "hide", None) or ()),
    )
    rubric = load_rubric(args.rubric)
    if getattr(args, "dtype", None):
        rubric = dataclasses.replace(rubric, dtype=args.dtype)
    if getattr(args, "spec_timeout", None):
        rubric = dataclasses.replace(rubric, spec_timeout=args.spec_timeout)
    return grade_to_gradescope(
        args.adapter,
        args.gradescope,
        rubric,
        jobs=args.jobs,
        report_json=getattr(args, "report_json", None),
        report_md=getattr(args, "report_md", None),
        options=options,
    )


def _bundle(args: argparse.Namespace) -> int:
    from conformance.grading.bundle import build_bundle

    names = build_bundle(
        Path(args.output),
        Path(args.rubric) if args.rubric else None,
        wheel=Path(args.wheel) if args.wheel else None,
        source=Path(args.source) if args.source else None,
    )
    print(f"wrote {args.output}: {', '.join(names)}")
    return 0


def _grade_all(args: argparse.Namespace) -> int:
    import signal

    from conformance.grading.grade_all import BatchStopped, grade_all
    from conformance.grading.rubric import load_rubric

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        print(f"grade-all: error: --out {out} is a file, not a folder", file=sys.stderr)
        return 2
    rubric = load_rubric(args.rubric)

    def on_sigterm(signum: int, frame: object) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # once: the gradebook is being written
        raise BatchStopped("SIGTERM")

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        rows = grade_all(
            Path(args.submissions),
            out,
            rubric,
            jobs=args.jobs,
            progress=not args.no_progress,
            hard_timeout_s=args.hard_timeout,
            rubric_path=args.rubric,
        )
    except KeyboardInterrupt as exc:
        how = "SIGTERM" if isinstance(exc, BatchStopped) else "Ctrl-C"
        print(
            f"grade-all: stopped by {how}; {out / 'gradebook.csv'} holds the submissions "
            "graded so far, the rest marked not graded",
            file=sys.stderr,
        )
        return 143 if isinstance(exc, BatchStopped) else 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    bad = sum(1 for r in rows if r.status != "ok")
    reused = sum(1 for r in rows if r.reused)
    regraded = sum(1 for r in rows if r.graded.startswith("regraded"))
    print(
        f"graded {len(rows)} submission(s) ({reused} complete and unchanged, reused; "
        f"{regraded} unfinished before, graded again); {bad} not ok; "
        f"see {Path(args.out) / 'gradebook.csv'} and summary.md"
    )
    # a batch in which a submission could not be graded is not a success: look at it
    return 1 if bad else 0


def _gradescope_run(args: argparse.Namespace) -> int:
    from conformance.grading.gradescope import run_autograder

    return run_autograder(
        Path(args.root) if args.root else None, Path(args.rubric) if args.rubric else None
    )


def _starter(args: argparse.Namespace) -> int:
    from conformance.grading.rubric import load_rubric
    from conformance.grading.starter import write_starter

    path = write_starter(load_rubric(args.rubric), Path(args.output), args.format, args.template)
    print(f"wrote {path}")
    return 0


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def register(sub: Any) -> None:
    """Add the gradescope-bundle, grade-all, gradescope-run and starter subcommands."""
    b = sub.add_parser("gradescope-bundle", help="build Gradescope's autograder zip")
    b.add_argument("--rubric", help="rubric TOML (default: every spec 1 point)")
    b.add_argument("-o", "--output", default="autograder.zip")
    b.add_argument(
        "--wheel", help="dl-ch2 wheel to ship (default: build it from the checkout, --source)"
    )
    b.add_argument(
        "--source",
        help="the dl-ch2 checkout to build the wheel from (default: the one the current "
        "folder is in)",
    )
    b.set_defaults(classroom_func=_bundle)

    a = sub.add_parser("grade-all", help="grade a folder of submissions")
    a.add_argument("submissions", help="folder: one .py file or one folder per submission")
    a.add_argument("--out", required=True, help="output folder (gradebook.csv, summary.md, ...)")
    a.add_argument("--rubric", help="rubric TOML (default: every spec 1 point)")
    a.add_argument(
        "-j",
        "--jobs",
        type=_positive_int,
        default=None,
        help="submissions at once (default: cores)",
    )
    a.add_argument(
        "--hard-timeout",
        type=float,
        default=None,
        help="seconds before a grade's process group is killed (default: its budget + 60)",
    )
    a.add_argument("--no-progress", action="store_true", help="no progress bar")
    a.set_defaults(classroom_func=_grade_all)

    r = sub.add_parser("gradescope-run", help="(the bundle's run_autograder) grade on Gradescope")
    r.add_argument(
        "--root", help="autograder root (default: $DL_CH2_AUTOGRADER_ROOT or /autograder)"
    )
    r.add_argument("--rubric", help="default: ROOT/source/rubric.toml")
    r.set_defaults(classroom_func=_gradescope_run)

    s = sub.add_parser("starter", help="write the student starter of an assignment")
    s.add_argument("--rubric", help="rubric TOML: its assignment's verbs (default: the chapter)")
    s.add_argument("--format", choices=["py", "ipynb"], help="default: from -o's suffix")
    s.add_argument(
        "--template",
        choices=["book", "adapter"],
        default="book",
        help="book (default): the chapter's code cells, blank, graded by the book's names; "
        "adapter: one function per verb and the ADAPTER (other frameworks' layouts)",
    )
    s.add_argument("-o", "--output", required=True, help="the file to write")
    s.set_defaults(classroom_func=_starter)


def dispatch(args: argparse.Namespace, rest: list[str] | None = None) -> int | None:
    """Run a classroom subcommand if ``args`` names one (else None); one-line errors.

    ``rest``: what the parser did not know; refused here, never dropped in silence."""
    func = getattr(args, "classroom_func", None)
    if func is None and not course_mode(args):
        return None
    try:
        unknown = [a for a in rest or [] if a != "--"]
        if unknown and func is None:  # grade in course mode: its pytest arguments
            args.pytest_args = [*getattr(args, "pytest_args", []), *unknown]
        elif unknown:
            raise ValueError(f"unknown option(s) {unknown}")
        return int(func(args) if func is not None else run_gradescope_grade(args))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (RuntimeError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
