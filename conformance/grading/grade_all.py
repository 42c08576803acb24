"""Grade a folder of submissions: ``dl-ch2 grade-all SUBMISSIONS --out DIR``.

A submission is one ``.py`` file or one folder (its adapter found as on Gradescope, see
``conformance.grading.gradescope.find_adapter``) directly inside SUBMISSIONS. Each is graded in
its own child process with the single grade's timeouts
(``conformance.grading.gradescope.run_grade``),
``--jobs`` at a time (default: the cores; each grade itself runs one worker, so the cores
are not oversubscribed). A submission that does not import, crashes or hangs gets its row
with the reason; it never stops the batch.

Writes, all atomically:

- ``DIR/gradebook.csv``: submission, score, max_score, one column per section (points
  earned), status (ok, incomplete, error) and reason;
- ``DIR/submissions/<name>/``: report.json, card.md, grade.log and meta.json per submission;
- ``DIR/summary.md`` and ``DIR/histogram.png``: the score distribution.

Resumable: meta.json keeps a key hashing the submission's content, the suite's own files and
the rubric; a re-run skips a submission whose key is unchanged.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import signal
import statistics
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from conformance import __version__ as SUITE_VERSION
from conformance.atomic import atomic_path, atomic_write
from conformance.grading.gradescope import (
    GradeRun,
    find_adapter,
    kill_running_grades,
    run_grade,
    stop_running_grades,
)
from conformance.grading.rubric import Rubric, score_report

__all__ = [
    "Row",
    "default_jobs",
    "discover",
    "grade_all",
    "submission_key",
    "suite_fingerprint",
]

_SUITE_DIR = Path(__file__).resolve().parents[1]
_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,80}$")


@dataclass
class Row:
    """One line of the gradebook."""

    submission: str
    score: float
    max_score: float | None
    sections: dict[str, float] = field(default_factory=dict)
    status: str = "ok"  # ok, incomplete, error
    reason: str = ""
    elapsed_s: float = 0.0
    key: str = ""
    reused: bool = False
    #: "new", "reused" (a complete grade of the same content, suite and rubric), or
    #: "regraded: was <status>" (an earlier grade that did not finish, graded again)
    graded: str = "new"


def default_jobs() -> int:
    """The cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


#: A submission larger than this (a file, or a folder's files together) is not graded.
MAX_SUBMISSION_BYTES = 50 * 2**20


def discover(folder: Path) -> list[Path]:
    """The submissions in ``folder``: its .py files and sub-folders, sorted by name."""
    return [p for p, problem in triage(folder) if problem is None]


def display_name(name: str) -> str:
    """A file name as the gradebook shows it: a name that is not UTF-8 is escaped."""
    raw = name.encode("utf-8", "surrogateescape")
    return raw.decode("utf-8", "backslashreplace")


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


def triage(folder: Path) -> list[tuple[Path, str | None]]:
    """Every entry of ``folder`` (but hidden ones) with why it cannot be graded, or None."""
    if not folder.is_dir():
        raise ValueError(f"submissions folder {folder} does not exist or is not a folder")
    out: list[tuple[Path, str | None]] = []
    for p in sorted(folder.iterdir()):
        if p.name.startswith((".", "_")):
            continue
        out.append((p, _problem(p)))
    return out


def _problem(p: Path) -> str | None:
    if p.is_symlink():
        return "not gradable: a symbolic link (submissions are copied, never followed)"
    if not (p.is_dir() or (p.is_file() and p.suffix in (".py", ".ipynb"))):
        return "not gradable: not a .py file, a notebook or a folder"
    if not os.access(p, os.R_OK | (os.X_OK if p.is_dir() else 0)):
        return "not gradable: unreadable"
    try:
        size = _size(p)
    except OSError as exc:
        return f"not gradable: unreadable ({exc.strerror or exc})"
    if size > MAX_SUBMISSION_BYTES:
        return f"not gradable: {size} bytes, over the {MAX_SUBMISSION_BYTES} byte limit"
    return None


def _hash_files(h: Any, root: Path, files: Sequence[Path]) -> None:
    for f in files:
        h.update(str(f.relative_to(root)).encode("utf-8", "surrogateescape") + b"\0")
        with open(f, "rb") as stream:  # streamed: memory stays flat whatever the size
            for chunk in iter(lambda: stream.read(1 << 20), b""):
                h.update(chunk)
        h.update(b"\0")


def suite_fingerprint() -> str:
    """The suite's version plus a hash of its specs, reference, goldens and grader code."""
    files = sorted(
        p
        for p in _SUITE_DIR.rglob("*")
        if p.is_file()
        and "__pycache__" not in p.parts
        and p.suffix in (".py", ".npz", ".json", ".txt", ".toml")
    )
    h = hashlib.sha256()
    _hash_files(h, _SUITE_DIR, files)
    return f"{SUITE_VERSION}:{h.hexdigest()[:16]}"


def submission_key(submission: Path, suite: str, rubric: Rubric) -> str:
    """Hash of the submission's content (every file, not __pycache__), suite and rubric."""
    h = hashlib.sha256()
    h.update(f"{suite}\0{rubric.digest}\0".encode())
    if submission.is_file():
        _hash_files(h, submission.parent, [submission])
    else:
        files = sorted(
            p
            for p in submission.rglob("*")
            if p.is_file() and "__pycache__" not in p.relative_to(submission).parts
        )
        _hash_files(h, submission, files)
    return h.hexdigest()


def _slot(submission: Path) -> str:
    name = submission.name
    if _SAFE.match(name):
        return name
    digest = hashlib.sha256(name.encode("utf-8", "surrogateescape")).hexdigest()[:8]
    return f"{re.sub(r'[^A-Za-z0-9._-]+', '_', name)[:60]}-{digest}"


def row_from_run(name: str, run: GradeRun, rubric: Rubric) -> Row:
    """Score one grade with the rubric, as on Gradescope."""
    if run.report is None:
        return Row(name, 0.0, None, {}, "error", run.error or "no report", run.elapsed_s)
    scored, _notes = score_report(run.report, rubric)
    sections: dict[str, float] = {}
    for s in scored:
        sections[s.section] = sections.get(s.section, 0.0) + s.score
    score = sum(s.score for s in scored)
    max_score = sum(s.max_score for s in scored)
    if not run.report.get("complete", True):
        status, reason = "incomplete", str(run.report.get("incomplete_reason") or "not finished")
    elif run.error:
        status, reason = "error", run.error
    else:
        status, reason = "ok", ""
    return Row(name, score, max_score, sections, status, reason, run.elapsed_s)


def _grade_one(
    submission: Path,
    slot_dir: Path,
    rubric: Rubric,
    key: str,
    grade_jobs: int,
    python: str,
    hard_timeout_s: float | None,
    hide: Sequence[str],
) -> Row:
    name = display_name(submission.name)
    try:
        adapter = find_adapter(submission, rubric.adapter)
    except ValueError as exc:
        row = Row(name, 0.0, None, {}, "error", str(exc))
    else:
        run = run_grade(
            str(adapter.resolve()),
            slot_dir,
            rubric,
            python=python,
            jobs=grade_jobs,
            hard_timeout_s=hard_timeout_s,
            folder=submission.resolve() if submission.is_dir() else None,
            hide=hide,
        )
        atomic_write(slot_dir / "grade.log", run.log, mode=0o600)
        row = row_from_run(name, run, rubric)
    row.key = key
    atomic_write(slot_dir / "meta.json", json.dumps(asdict(row), indent=1) + "\n", mode=0o600)
    return row


def _load_meta(slot_dir: Path, key: str) -> tuple[Row | None, str]:
    """(the stored row if it may be reused, else None; why it is graded again, or "new").

    Only a complete grade (status ok) of the same key is reused: an interrupted, errored or
    incomplete one is graded again, and its row says so."""
    try:
        meta = json.loads((slot_dir / "meta.json").read_text(encoding="utf-8"))
        row = Row(**meta)
    except (OSError, ValueError, TypeError):
        return None, "new"
    if row.key != key:
        return None, "new"
    if row.status != "ok":
        return None, f"regraded: was {row.status}"
    row.reused, row.graded = True, "reused"
    return row, "reused"


def _fmt(x: float | None) -> str:
    return "" if x is None else f"{x:g}"


def gradebook_csv(rows: Sequence[Row]) -> str:
    sections = sorted({s for r in rows for s in r.sections})
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(
        ["submission", "score", "max_score", *(f"§{s}" for s in sections), "status", "reason",
         "graded"]
    )  # fmt: skip
    for r in rows:
        w.writerow(
            [
                r.submission,
                _fmt(r.score),
                _fmt(r.max_score),
                *(
                    _fmt(r.sections.get(s, 0.0) if r.max_score is not None else None)
                    for s in sections
                ),
                r.status,
                r.reason,
                r.graded,
            ]
        )
    return buf.getvalue()


def _percent(r: Row) -> float | None:
    if r.max_score is None:
        return None
    return 100.0 * r.score / r.max_score if r.max_score > 0 else 0.0


def summary_markdown(rows: Sequence[Row], histogram: str | None) -> str:
    counts = {k: sum(1 for r in rows if r.status == k) for k in ("ok", "incomplete", "error")}
    pct = [p for p in (_percent(r) for r in rows) if p is not None]
    lines = [
        "# Grades",
        "",
        f"{len(rows)} submission(s): {counts['ok']} ok, {counts['incomplete']} incomplete, "
        f"{counts['error']} error.",
        "",
    ]
    if pct:
        lines += [
            f"Score (percent of each submission's max_score, {len(pct)} graded): mean "
            f"{statistics.fmean(pct):.1f}, median {statistics.median(pct):.1f}, "
            f"min {min(pct):.1f}, max {max(pct):.1f}.",
            "",
            "| score % | submissions |",
            "| --- | --- |",
        ]
        for lo in range(0, 100, 10):
            hi = lo + 10
            n = sum(1 for p in pct if lo <= p < hi or (hi == 100 and p == 100))
            label = f"[{lo}, {hi}]" if hi == 100 else f"[{lo}, {hi})"
            lines.append(f"| {label} | {n} |")
        lines.append("")
    if histogram:
        lines += [f"![score distribution]({histogram})", ""]
    problems = [r for r in rows if r.status != "ok"]
    if problems:
        lines += ["## Not ok", ""]
        lines += [f"- `{r.submission}`: {r.status}: {r.reason}" for r in problems]
        lines.append("")
    return "\n".join(lines)


def write_histogram(path: Path, rows: Sequence[Row]) -> bool:
    """A PNG histogram of the score percentages; False if matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    pct = [p for p in (_percent(r) for r in rows) if p is not None]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.hist(pct, bins=list(range(0, 101, 10)), color="#4472c4", edgecolor="white")
    ax.set_xlabel("score (% of max_score)")
    ax.set_ylabel("submissions")
    ax.set_title(f"{len(pct)} graded submission(s)")
    fig.tight_layout()
    with atomic_path(path, mode=0o600) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return True


class BatchStopped(KeyboardInterrupt):
    """SIGTERM (or Ctrl-C) stopped the batch: the gradebook holds what finished."""


@dataclass
class _Batch:
    """What one run of ``grade_all`` grades, and the rows it has so far."""

    entries: list[tuple[Path, str | None]]
    rows: dict[Path, Row]
    todo: list[tuple[Path, Path, str, str]]  # submission, slot folder, key, "new"/"regraded"


def _private_dir(path: Path) -> Path:
    """A folder of the batch's outputs: the grader's user alone may enter it (mode 700)."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o700)
    return path


def _plan(submissions: Path, out: Path, rubric: Rubric) -> _Batch:
    entries = triage(submissions)
    _private_dir(out)
    _private_dir(out / "submissions")
    suite = suite_fingerprint()
    batch = _Batch(entries, {}, [])
    for sub, problem in entries:
        if problem is not None:
            batch.rows[sub] = Row(display_name(sub.name), 0.0, None, {}, "error", problem)
            continue
        slot_dir = out / "submissions" / _slot(sub)
        key = submission_key(sub, suite, rubric)
        cached, how = _load_meta(slot_dir, key)
        if cached is not None:
            batch.rows[sub] = cached
        else:
            _private_dir(slot_dir)
            batch.todo.append((sub, slot_dir, key, how))
    return batch


def _stop(pool: ThreadPoolExecutor) -> None:
    """End the grades running (each leaves its incomplete report); a second Ctrl-C or
    SIGTERM while they wind down kills them at once, and the gradebook is still written."""
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda _s, _f: kill_running_grades())
    pool.shutdown(wait=False, cancel_futures=True)
    try:
        stop_running_grades()
    except KeyboardInterrupt:  # a handler of the caller's: the same, at once
        kill_running_grades()
        stop_running_grades(grace=5.0)


def _run(batch: _Batch, pool: ThreadPoolExecutor, grade: Callable[..., Row],
         on_row: Callable[[Row], None] | None, bar: Any) -> BaseException | None:  # fmt: skip
    """Grade ``batch.todo`` on ``pool``; the KeyboardInterrupt that stopped it, if one did."""
    futures: dict[Any, tuple[Path, str]] = {}
    try:
        for sub, slot, key, how in batch.todo:
            futures[pool.submit(grade, sub, slot, key)] = (sub, how)
        for fut in as_completed(futures):
            sub, how = futures[fut]
            try:
                row = fut.result()
            except Exception as exc:  # the batch never stops for one submission
                row = Row(display_name(sub.name), 0.0, None, {}, "error",
                          f"{type(exc).__name__}: {exc}")  # fmt: skip
            row.graded = how
            batch.rows[sub] = row
            if on_row is not None:
                on_row(row)
            if bar is not None:
                bar.update(1)
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM turned into BatchStopped
        _stop(pool)
        pool.shutdown(wait=True)
        for fut, (sub, how) in futures.items():  # grades that ended while the batch stopped
            ended = fut.done() and not fut.cancelled() and fut.exception() is None
            if sub not in batch.rows and ended:
                batch.rows[sub] = fut.result()
                batch.rows[sub].graded = how
        return exc
    finally:
        pool.shutdown(wait=True)
    return None


def _write_outputs(out: Path, batch: _Batch, options: str) -> list[Row]:
    why = "not graded: the batch was stopped (Ctrl-C or SIGTERM) before it finished"
    ordered = [
        batch.rows.get(s) or Row(display_name(s.name), 0.0, None, {}, "error", why)
        for s, _ in batch.entries
    ]
    atomic_write(out / "gradebook.csv", gradebook_csv(ordered), mode=0o600)
    has_png = write_histogram(out / "histogram.png", ordered)
    md = summary_markdown(ordered, "histogram.png" if has_png else None)
    atomic_write(out / "summary.md", md + f"\nGraded with: {options}.\n", mode=0o600)
    return ordered


def grade_all(
    submissions: Path,
    out: Path,
    rubric: Rubric,
    *,
    jobs: int | None = None,
    grade_jobs: int = 1,
    progress: bool = True,
    python: str = sys.executable,
    hard_timeout_s: float | None = None,
    on_row: Callable[[Row], None] | None = None,
    rubric_path: str | None = None,
) -> list[Row]:
    """Grade every submission in ``submissions`` into ``out``; returns the gradebook rows.

    Every entry gets a row: graded, an error with its reason, or not gradable. A Ctrl-C or
    SIGTERM stops the batch, ends the grades running, writes the gradebook of what finished
    (the rest: "not graded: the batch was stopped") and re-raises. Relative paths are taken
    from the current folder; the outputs are the grader's user's alone (folders 700, files
    600).
    """
    if jobs is not None and jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    if grade_jobs < 1:
        raise ValueError(f"grade_jobs must be >= 1, got {grade_jobs}")
    submissions, out = submissions.resolve(), out.resolve()
    batch = _plan(submissions, out, rubric)
    hide = [str(submissions), str(out)]

    def grade(sub: Path, slot: Path, key: str) -> Row:
        return _grade_one(sub, slot, rubric, key, grade_jobs, python, hard_timeout_s, hide)

    bar: Any = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(batch.entries), initial=len(batch.rows), unit="submission",
                   file=sys.stderr)  # fmt: skip
    n = jobs or default_jobs()
    handlers = _signal_handlers()
    try:
        stopped = _run(batch, ThreadPoolExecutor(max_workers=n), grade, on_row, bar)
    finally:
        if bar is not None:
            bar.close()
    hard = "budget + 60 s" if hard_timeout_s is None else f"{hard_timeout_s:g} s"
    rubric_name = rubric_path or "the default"
    options = (f"{n} submission(s) at once (--jobs), hard timeout {hard} (--hard-timeout), "
               f"rubric {rubric_name} (--rubric, sha256 {rubric.digest[:12]})")  # fmt: skip
    try:
        ordered = _write_outputs(out, batch, options)
    finally:
        _restore(handlers)  # a stop's handlers lasted until the gradebook was written
    if stopped is not None:
        raise stopped
    return ordered


def _signal_handlers() -> dict[int, Any]:
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}


def _restore(handlers: dict[int, Any]) -> None:
    for sig, handler in handlers.items():
        signal.signal(sig, handler)
