"""Gradescope's ``results.json`` from a grade, and the entry point of the autograder bundle.

- ``run_grade`` grades one adapter in a child process (``python -m conformance grade``, with
  the single grade's timeouts) and returns its report, or why there is none;
- ``gradescope_results`` turns a report and a rubric (``conformance.grading.rubric``) into the
  document Gradescope reads from ``/autograder/results/results.json``: ``score``,
  ``execution_time``, ``output`` (the Markdown card), ``tests[]`` with ``name``, ``number``,
  ``score``, ``max_score``, ``status``, ``output``, ``tags`` and ``visibility``;
- ``find_adapter`` finds the adapter in a submission folder (the rubric's file name, default
  ``adapter.py``, else the single .py file that assigns ``ADAPTER``), without importing it;
- ``run_autograder`` is what the bundle's ``run_autograder`` script runs.

Field reference: https://gradescope-autograders.readthedocs.io/en/latest/specs/
"""

from __future__ import annotations

import ast
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conformance.atomic import atomic_write
from conformance.grading.frameworks import book_entry
from conformance.grading.notebook import notebook_cells
from conformance.grading.rubric import Rubric, ScoredSpec, load_rubric, score_report

__all__ = [
    "AUTOGRADER_ROOT_ENV",
    "GradeRun",
    "find_adapter",
    "gradescope_results",
    "gradescope_tests",
    "run_autograder",
    "run_grade",
    "write_gradescope",
]

#: Overrides the autograder's root (``/autograder`` on Gradescope), e.g. for tests.
AUTOGRADER_ROOT_ENV = "DL_CH2_AUTOGRADER_ROOT"
#: Seconds a grade may take beyond its budget before the child process group is killed.
KILL_GRACE_S = 60.0
#: The budget of one grade (seconds) when the rubric sets none; the grader stops there and
#: reports the grade incomplete. A NumPy reference grade takes about 6 s.
DEFAULT_BUDGET_S = 600.0


@dataclass(frozen=True)
class GradeOptions:
    """``grade``'s own options given with a rubric (course mode): each one is passed on to
    the grade and shown on its card; None (or empty) keeps the rubric's or the default."""

    budget: float | None = None
    memory_limit_gib: float | None = None
    max_worker_restart: int | None = None
    allow: tuple[str, ...] = ()
    hide: tuple[str, ...] = ()

    def args(self) -> list[str]:
        out: list[str] = []
        if self.memory_limit_gib is not None:
            out += ["--memory-limit", f"{self.memory_limit_gib:g}"]
        if self.max_worker_restart is not None:
            out += ["--max-worker-restart", str(self.max_worker_restart)]
        for package in self.allow:
            out += ["--allow", package]
        for path in self.hide:
            out += ["--hide", str(Path(path).resolve())]
        return out


@dataclass(frozen=True)
class GradeRun:
    """The outcome of one grade in a child process."""

    returncode: int | None  # None: killed after the hard timeout
    report: dict[str, Any] | None
    card_md: str
    elapsed_s: float
    error: str | None  # why there is no (trustworthy) report, one line
    log: str  # the child's stdout and stderr

    @property
    def complete(self) -> bool:
        return self.report is not None and bool(self.report.get("complete", True))


def grade_command(
    adapter: str,
    report_json: Path,
    report_md: Path,
    rubric: Rubric,
    *,
    python: str = sys.executable,
    jobs: int | None = None,
    hide: Sequence[str] = (),
    folder: Path | None = None,
    options: GradeOptions | None = None,
) -> list[str]:
    """The ``python -m conformance grade`` command line for one adapter under ``rubric``.

    ``folder``: a folder submission, graded as a folder (its own modules importable);
    ``hide``: paths the submission's worker must not see (other submissions, the results).
    """
    cmd = [python, "-m", "conformance", "grade", str(folder) if folder else adapter]
    cmd += ["--report-json", str(report_json), "--report-md", str(report_md)]
    if rubric.dtype:
        cmd += ["--dtype", rubric.dtype]
    if rubric.spec_timeout is not None:
        cmd += ["--spec-timeout", f"{rubric.spec_timeout:g}"]
    given = options.budget if options is not None else None
    cmd += ["--budget", f"{given if given is not None else _budget(rubric):g}"]
    if options is not None:
        cmd += options.args()
    n = jobs if jobs is not None else rubric.jobs
    if n is not None:
        cmd += ["-n", str(n)]
    if rubric.uses_torch:
        cmd += ["--allow", "torch"]
    for path in hide:
        cmd += ["--hide", str(path)]
    return cmd


def _hard_timeout(rubric: Rubric, options: GradeOptions | None) -> float:
    budget = options.budget if options is not None and options.budget else _budget(rubric)
    return budget + KILL_GRACE_S


def _budget(rubric: Rubric) -> float:
    return rubric.budget if rubric.budget is not None else DEFAULT_BUDGET_S


def _error_line(log: str) -> str:
    lines = [ln.strip() for ln in log.splitlines() if ln.strip()]
    for ln in reversed(lines):
        low = ln.lower()
        if "error" in low or "raised" in low:
            return ln[:300]
    return lines[-1][:300] if lines else "no output"


def run_grade(
    adapter: str,
    workdir: Path,
    rubric: Rubric,
    *,
    python: str = sys.executable,
    jobs: int | None = None,
    hard_timeout_s: float | None = None,
    env: Mapping[str, str] | None = None,
    hide: Sequence[str] = (),
    folder: Path | None = None,
    options: GradeOptions | None = None,
) -> GradeRun:
    """Grade ``adapter`` in a child process whose working directory is ``workdir``.

    The report and card land in ``workdir`` (report.json, card.md). The child runs in its
    own process group, killed whole after ``hard_timeout_s`` (default: the grade's budget
    plus a grace) in case the grader itself hangs.
    """
    workdir = workdir.resolve()  # the child runs in it: a relative path would nest
    workdir.mkdir(parents=True, exist_ok=True)
    report_json, report_md = workdir / "report.json", workdir / "card.md"
    for stale in (report_json, report_md):
        stale.unlink(missing_ok=True)
    target, sep, attr = adapter.partition(":")
    if target.endswith((".py", ".ipynb")) or Path(target).is_dir():  # the child runs elsewhere
        adapter = str(Path(target).resolve()) + sep + attr
    cmd = grade_command(adapter, report_json, report_md, rubric, python=python, jobs=jobs,
                        hide=hide, folder=folder, options=options)  # fmt: skip
    if hard_timeout_s is None:
        hard_timeout_s = _hard_timeout(rubric, options)
    start = time.perf_counter()
    returncode, log = _run_child(cmd, workdir, _child_env(env), hard_timeout_s)
    elapsed = time.perf_counter() - start
    report, error = _read_report(report_json, returncode, log)
    if returncode is None:
        error = f"the grade was killed after {hard_timeout_s:g} s (it hung)"
    card = report_md.read_text(encoding="utf-8") if report_md.exists() else ""
    return GradeRun(returncode, report, card, elapsed, error, log)


def _child_env(env: Mapping[str, str] | None) -> dict[str, str]:
    """The grade's environment: quiet warnings, and this checkout's (or the installed)
    conformance first on the path, never the submission's."""
    child_env = dict(os.environ if env is None else env)
    child_env.setdefault("PYTHONWARNINGS", "ignore")
    here = str(Path(__file__).resolve().parents[2])
    child_env["PYTHONPATH"] = os.pathsep.join(
        p for p in (here, child_env.get("PYTHONPATH", "")) if p
    )
    return child_env


def _run_child(
    cmd: list[str], workdir: Path, env: dict[str, str], timeout_s: float
) -> tuple[int | None, str]:
    """(exit code, or None if killed after ``timeout_s``; its output) of the grade's child,
    run in its own process group (killed whole)."""
    with tempfile.TemporaryFile(mode="w+", encoding="utf-8", errors="replace") as out:
        proc = subprocess.Popen(
            cmd,
            cwd=workdir,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
        _RUNNING.add(proc)
        returncode: int | None
        try:
            returncode = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            returncode = None
        finally:
            _RUNNING.discard(proc)
        out.seek(0)
        return returncode, out.read()


def _read_report(
    report_json: Path, returncode: int | None, log: str
) -> tuple[dict[str, Any] | None, str | None]:
    """(the report, or None; why there is none, or why it cannot be trusted)."""
    report: dict[str, Any] | None = None
    error: str | None = None
    if report_json.exists():
        try:
            loaded = json.loads(report_json.read_text(encoding="utf-8"))
            report = loaded if isinstance(loaded, dict) else None
        except (OSError, ValueError) as exc:
            error = f"the report could not be read: {exc}"
    if report is None and error is None and returncode is not None:
        if returncode in (2, 4):  # usage error (4: pytest's own, before the grader's 2)
            error = f"the submission could not be graded: {_error_line(log)}"
        else:
            error = f"the grader exited with code {returncode} and no report: {_error_line(log)}"
    return report, error


#: The grades running now (their child processes), so a stopped batch can end them.
_RUNNING: set[subprocess.Popen[Any]] = set()


def stop_running_grades(grace: float = 30.0) -> None:
    """SIGTERM every running grade (each writes its report, incomplete), SIGKILL after grace."""
    procs = list(_RUNNING)
    for proc in procs:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for proc in procs:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            _kill_group(proc)


def kill_running_grades() -> None:
    """SIGKILL every running grade's process group now (a second Ctrl-C); no waiting, so it
    may run in a signal handler."""
    for proc in list(_RUNNING):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)


def _kill_group(proc: subprocess.Popen[Any]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()
    proc.wait()


def _test_name(spec_id: str) -> str:
    return spec_id.rpartition("::")[2] or spec_id


#: At most this many characters of one failed spec's message in an objective's output.
SPEC_OUTPUT_LIMIT = 6000


def _spec_lines(spec: ScoredSpec) -> str:
    """A failed spec in its objective's output: its name and one-line message, then the
    rest of the message (got and expected, the reproduce-with snippet) indented."""
    text = spec.output.strip()
    if len(text) > SPEC_OUTPUT_LIMIT:
        text = text[:SPEC_OUTPUT_LIMIT] + "\n... (cut: the report card has the whole message)"
    first, _, rest = text.partition("\n")
    lines = [f"- {_test_name(spec.id)}: {first}"]
    lines += [f"    {line}" for line in rest.splitlines()]
    return "\n".join(lines)


def _objective_output(head: ScoredSpec, specs: Sequence[ScoredSpec]) -> str:
    """An objective's output: how it scored, then each failed spec it holds (hidden specs
    counted, not shown)."""
    out = head.output.replace(" See each spec's entry for why.", "")
    failed = [s for s in specs if not s.passed]
    shown = [s for s in failed if s.visibility == "visible"]
    if shown:
        out += "\n\nFailed specs:\n" + "\n".join(_spec_lines(s) for s in shown)
    return out


def _test_entry(s: ScoredSpec, name: str, output: str) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": name,
        "number": s.number,
        "score": s.score,
        "max_score": s.max_score,
        "status": "passed" if s.passed else "failed",
        "tags": [s.section],
        "visibility": s.visibility,
    }
    if output:
        entry["output"] = output
    return entry


def gradescope_tests(scored: Sequence[ScoredSpec]) -> list[dict[str, Any]]:
    """Gradescope's ``tests``, nested by learning objective (issue 27): one entry per
    objective, its output listing its failed specs with their messages and snippets; a spec
    outside every objective has its own entry if it carries points. No 0/0 entries."""
    members: dict[str, list[ScoredSpec]] = {}
    for s in scored:
        if s.kind == "spec" and s.objective is not None:
            members.setdefault(s.objective, []).append(s)
    tests = []
    for s in scored:
        if s.kind == "objective":
            specs = members.get(str(s.objective), [])
            tests.append(_test_entry(s, str(s.objective), _objective_output(s, specs)))
        elif s.objective is None and s.max_score > 0:
            tests.append(_test_entry(s, _test_name(s.id), s.output))
    return tests


def gradescope_results(
    run: GradeRun, rubric: Rubric, *, extra_output: Sequence[str] = ()
) -> dict[str, Any]:
    """The results.json document for one grade (see the module docstring)."""
    notes = list(extra_output)
    tests: list[dict[str, Any]] = []
    if run.report is None:
        notes.insert(0, f"**Not graded**: {run.error}")
        score = 0.0
    else:
        report = run.report
        scored, score_notes = score_report(report, rubric)
        if not report.get("complete", True):
            not_run = sum(1 for s in scored if s.output.startswith("Not run"))
            notes.insert(
                0,
                f"**Incomplete grade**: {report.get('incomplete_reason') or 'it did not finish'}."
                f" {not_run} spec(s) were not run and count as failed.",
            )
        elif run.error:
            notes.insert(0, f"**Grader problem**: {run.error}")
        notes += score_notes
        tests = gradescope_tests(scored)
        score = sum(s.score for s in scored)
    output = "\n\n".join([*notes, run.card_md.strip()]).strip() + "\n"
    return {
        "score": round(score, 6),
        "execution_time": max(0, round(run.elapsed_s)),
        "output": output,
        "output_format": "md",
        "test_output_format": "text",
        "visibility": "visible",
        "stdout_visibility": "hidden",
        "tests": tests,
    }


def write_gradescope(path: str | Path, results: Mapping[str, Any]) -> Path:
    """Write results.json atomically."""
    return atomic_write(path, json.dumps(results, indent=1) + "\n")


def _sources(path: Path) -> list[str | bytes]:
    """A file's code to parse: a .py file whole, a notebook cell by cell (read as JSON, so
    no nbformat is needed; IPython lines blanked, a cell that still fails to parse skipped)."""
    if path.suffix != ".ipynb":
        return [path.read_bytes()]
    out: list[str | bytes] = []
    for cell in notebook_cells(path):
        lines = str(cell["source"]).splitlines()
        if lines and lines[0].lstrip().startswith("%%"):
            continue  # a cell magic: not Python
        out.append("\n".join("" if ln.lstrip().startswith(("%", "!")) else ln for ln in lines))
    return out


def _assigns_adapter(path: Path) -> bool:
    try:
        sources = _sources(path)
    except (ValueError, OSError):
        return False
    for source in sources:
        try:
            tree = ast.parse(source, filename=str(path))
        except (SyntaxError, ValueError):
            continue
        if any(_names_adapter(node) for node in tree.body):
            return True
    return False


def _names_adapter(node: ast.stmt) -> bool:
    """A top-level statement binding ``ADAPTER`` (an assignment or an import)."""
    targets: list[ast.expr] = []
    if isinstance(node, ast.Assign):
        targets = list(node.targets)
    elif isinstance(node, (ast.AnnAssign, ast.AugAssign)):
        targets = [node.target]
    elif isinstance(node, ast.ImportFrom):
        return any((a.asname or a.name) == "ADAPTER" for a in node.names)
    return any(isinstance(t, ast.Name) and t.id == "ADAPTER" for t in targets)


def _python_files(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in [*folder.rglob("*.py"), *folder.rglob("*.ipynb")]
        if p.is_file()
        and not any(
            part.startswith(".") or part == "__pycache__" for part in p.relative_to(folder).parts
        )
    )


def find_adapter(submission: Path, name: str = "adapter.py") -> Path:
    """The adapter file of a submission (a .py file, or a folder); ValueError if none/ambiguous.

    In a folder: the file called ``name`` (at any depth, if exactly one), else the single .py
    file or notebook that assigns ``ADAPTER`` at module level (found by parsing, never
    importing). A notebook stands for the Python file of its code cells.
    """
    if submission.is_file():
        if submission.suffix not in (".py", ".ipynb"):
            raise ValueError(
                f"submission {submission.name}: not a .py file, a notebook or a folder"
            )
        return submission
    if not submission.is_dir():
        raise ValueError(f"submission {submission}: does not exist")
    files = _python_files(submission)
    stem = Path(name).stem
    named = [p for p in files if p.name == name or p.name == f"{stem}.ipynb"]
    if len(named) == 1:
        return named[0]
    candidates = [p for p in (named or files) if _assigns_adapter(p)]
    if len(candidates) == 1:
        return candidates[0]
    if not candidates and (entry := book_entry(files)) is not None:
        return entry  # graded by the book's names (issue 27)
    if not candidates:
        raise ValueError(
            f"submission {submission.name}: no {name}, no .py file assigning ADAPTER and "
            "no single notebook or script naming the book's code (NaiveDense, fit, ...)"
        )
    rel = [str(p.relative_to(submission)) for p in candidates]
    raise ValueError(f"submission {submission.name}: several files define ADAPTER: {rel}")


def grade_to_gradescope(
    adapter: str,
    out: str | Path | None,
    rubric: Rubric,
    *,
    workdir: Path | None = None,
    jobs: int | None = None,
    report_json: str | Path | None = None,
    report_md: str | Path | None = None,
    options: GradeOptions | None = None,
) -> int:
    """Grade ``adapter`` under ``rubric``, print its rubric score, and write Gradescope's
    results.json to ``out`` (if given); the grade's exit code.

    ``dl-ch2 grade ADAPTER --rubric R [--gradescope PATH]`` and ``python -m conformance
    grade ...`` run this. Returns 2 when the adapter could not be graded at all. The
    grader's own report and card are copied to ``report_json`` / ``report_md`` if given.
    """
    with tempfile.TemporaryDirectory(prefix="dl-ch2-grade-") as tmp:
        where = Path(workdir or tmp)
        run = run_grade(adapter, where, rubric, jobs=jobs, options=options)
        for src, dst in ((where / "report.json", report_json), (where / "card.md", report_md)):
            if dst is not None and src.exists():
                atomic_write(dst, src.read_bytes())
    sys.stdout.write(run.log)
    results = gradescope_results(run, rubric)
    if out is not None:
        write_gradescope(out, results)
    top = sum(t["max_score"] for t in results["tests"])
    print(f"rubric score: {results['score']:g} / {top:g}"
          + ("" if out is None else f" (results.json: {out})"))  # fmt: skip
    if run.returncode is None:
        return 3  # killed: incomplete
    if run.report is None and run.returncode == 0:
        return 1  # no report is never a pass
    return 2 if run.returncode == 4 else run.returncode  # pytest's usage error is ours


def run_autograder(root: Path | None = None, rubric_path: Path | None = None) -> int:
    """Grade ``ROOT/submission`` with ``ROOT/source/rubric.toml``; write results.json.

    ``ROOT`` is ``$DL_CH2_AUTOGRADER_ROOT`` or ``/autograder``. Always writes
    ``ROOT/results/results.json`` (a submission without an adapter scores 0 with the reason)
    and returns 0, since Gradescope reads the score from the file, not the exit code.
    """
    root = root or Path(os.environ.get(AUTOGRADER_ROOT_ENV, "/autograder"))
    rubric = load_rubric(rubric_path or root / "source" / "rubric.toml")
    results_path = root / "results" / "results.json"
    start = time.perf_counter()
    try:
        adapter = find_adapter(root / "submission", rubric.adapter)
    except ValueError as exc:
        run = GradeRun(None, None, "", time.perf_counter() - start, str(exc), "")
        write_gradescope(results_path, gradescope_results(run, rubric))
        print(f"run_autograder: {exc}", file=sys.stderr)
        return 0
    with tempfile.TemporaryDirectory(prefix="dl-ch2-autograder-") as scratch:
        # the whole submission folder is copied for the worker (its own modules import);
        # the worker sees nothing of /autograder: the grader, the rubric, the results
        run = run_grade(
            str(adapter), Path(scratch), rubric, folder=root / "submission", hide=[str(root)]
        )
    sys.stdout.write(run.log)
    write_gradescope(results_path, gradescope_results(run, rubric))
    return 0
