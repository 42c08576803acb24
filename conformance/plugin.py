"""The pytest plugin behind ``pytest conformance --impl ...`` and every grade.

Options: ``--impl`` (or ``$DL_CH2_IMPL``), ``--dtype``, ``--report-json``, ``--report-md``,
``--expectations``, ``--spec-timeout``, ``--slow-spec-timeout``, ``--budget``,
``--memory-limit``, ``--max-restarts``, ``--worker-packages``, ``--hide``.

This process is the *grader*: it runs the specs, holds the golden data and the reference, and
writes the report. It never imports the implementation: the adapter runs in a worker process
(``conformance.grading``) that serves its verbs over a pipe, unprivileged when this process
is root; specs see it through ``RemoteAdapter``. A spec's timeout is enforced here, outside
the worker: a late reply kills the worker (and everything it started), fails the spec, and
the next spec gets a fresh worker. Under pytest-xdist (``-n N``) each xdist process is such
a grader with a worker of its own.
"""

from __future__ import annotations

import fnmatch
import json
import math
import os
import platform
import re
import shutil
import signal
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conformance.adapter import CAPABILITIES, KNOWN_DTYPES, AdapterLoadError
from conformance.atomic import atomic_write
from conformance.grading.client import AdapterMeta, Connection, RemoteAdapter, plan
from conformance.grading.limits import (
    DEFAULT_MAX_WORKER_RESTART,
    DEFAULT_MEMORY_LIMIT_GIB,
    DEFAULT_SLOW_SPEC_TIMEOUT,
    DEFAULT_SPEC_TIMEOUT,
)
from conformance.grading.sandbox import Limits
from conformance.harness import Impl
from conformance.report import (
    NOT_CLAIMED,
    SNAPSHOT_REASON,
    empty_report,
    fill_counts,
    report_markdown,
    suite_version,
)

#: Verbs that convert arrays rather than compute: not "the verb a spec exercises".
_CONVERSIONS = ("asarray", "to_numpy")
#: A failure message is kept whole up to this many characters.
MESSAGE_LIMIT = 6000
EXPECTATIONS_DIR = Path(__file__).parent / "expectations"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("dl-ch2 conformance")
    _add_what_to_grade(group)
    _add_limits(group)
    group.addoption("--adapter-metadata", default=None, help=argparse_suppress())
    # the supervisor's one-line usage errors (a bad adapter, a dtype it lacks) go to this file,
    # and pytest prints nothing of its own: the grade's worker is the only one (issue 31)
    group.addoption("--usage-error-file", default=None, help=argparse_suppress())
    group.addoption("--submission-folder", default=None, help=argparse_suppress())
    group.addoption("--grade-dir", default=None, help=argparse_suppress())
    # the supervisor's wall-clock deadline (epoch seconds): its budget includes our start-up
    group.addoption("--deadline", type=float, default=None, help=argparse_suppress())


def _add_what_to_grade(group: pytest.OptionGroup) -> None:
    """What is graded, in which dtype, and where the report goes."""
    group.addoption(
        "--impl",
        default=None,
        help="implementation to grade: numpy, torch-cpu, torch-cuda, a module[:attr] "
        "or path/to/adapter.py (default: $DL_CH2_IMPL, else numpy)",
    )
    group.addoption(
        "--dtype", default=None, help="float32 or float64 (default: the adapter's first)"
    )
    group.addoption("--report-json", default=None, help="write the report card as JSON here")
    group.addoption("--report-md", default=None, help="write the Markdown summary here")
    group.addoption(
        "--expectations",
        default=None,
        help="skips/xfails file of test-id patterns (default: the adapter's own)",
    )


def _add_limits(group: pytest.OptionGroup) -> None:
    """Time, memory, restarts, and what the submission's worker may import or see."""
    group.addoption(
        "--spec-timeout",
        type=float,
        default=DEFAULT_SPEC_TIMEOUT,
        help="seconds per spec, enforced from outside the submission's worker "
        f"(default {DEFAULT_SPEC_TIMEOUT:g})",
    )
    group.addoption(
        "--slow-spec-timeout",
        type=float,
        default=DEFAULT_SLOW_SPEC_TIMEOUT,
        help=f"seconds per spec marked slow (default {DEFAULT_SLOW_SPEC_TIMEOUT:g})",
    )
    group.addoption(
        "--budget",
        type=float,
        default=None,
        help="seconds for the whole run; past it the run stops and is reported incomplete",
    )
    group.addoption(
        "--memory-limit",
        type=float,
        default=DEFAULT_MEMORY_LIMIT_GIB,
        help="GiB of data memory (RLIMIT_DATA, hard) of the submission's worker; 0: no cap "
        f"(default {DEFAULT_MEMORY_LIMIT_GIB:g})",
    )
    group.addoption(
        "--max-restarts",
        type=int,
        default=DEFAULT_MAX_WORKER_RESTART,
        help="worker losses (crashes, timeouts) tolerated before the run stops "
        f"(default {DEFAULT_MAX_WORKER_RESTART})",
    )
    _add_worker_options(group)


def _add_worker_options(group: Any) -> None:
    """What the submission's worker sees, and the supervisor's options (runner.py)."""
    group.addoption(
        "--worker-packages",
        default="numpy",
        help="libraries an unprivileged worker may import, comma-separated (default numpy)",
    )
    group.addoption(
        "--hide",
        action="append",
        default=[],
        help="a path the submission's worker must not see (repeatable; needs root)",
    )


def argparse_suppress() -> str:
    import argparse

    return argparse.SUPPRESS


@dataclass
class State:
    spec: str
    role: str = "in-process"  # or "controller" (xdist's, which runs no spec)
    adapter: RemoteAdapter | None = None
    conn: Connection | None = None
    meta: AdapterMeta | None = None
    dtype: str = "float64"
    device: str = "cpu"
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    unmatched: list[str] = field(default_factory=list)
    collected: list[str] = field(default_factory=list)
    spec_info: dict[str, dict[str, Any]] = field(default_factory=dict)
    collect_errors: list[str] = field(default_factory=list)
    stop_reason: str | None = None
    interrupt: str | None = None
    exitstatus: int | None = None
    grade_dir: Path | None = None
    own_grade_dir: bool = False
    budget: float | None = None
    deadline: float = math.inf  # time.monotonic() at which the budget runs out
    t0: float = field(default_factory=time.monotonic)
    timer: threading.Timer | None = None
    last_snapshot: float = 0.0
    # relative paths given are from the folder the grade was started in
    origin_cwd: Path = field(
        default_factory=lambda: Path(os.environ.get("DL_CH2_ORIGIN_CWD") or os.getcwd())
    )
    isolation: dict[str, Any] = field(default_factory=dict)


_STATE_KEY = pytest.StashKey[State]()
_CONFIG: dict[str, pytest.Config] = {}


def _role(config: pytest.Config) -> str:
    if hasattr(config, "workerinput"):
        return "in-process"  # an xdist process: a grader like any other
    if config.getoption("dist", "no") != "no" and config.getoption("numprocesses", None):
        return "controller"
    return "in-process"


def _grade_dir(config: pytest.Config, state: State) -> Path:
    given = config.getoption("--grade-dir", None)
    base = Path(given) if given else Path(tempfile.mkdtemp(prefix="dl-ch2-grade-"))
    state.own_grade_dir = not given
    wid = getattr(config, "workerinput", {}).get("workerid")
    folder = base / f"grader-{wid}" if wid else base
    folder.mkdir(parents=True, exist_ok=True)
    for d in {base, folder}:
        os.chmod(d, 0o711)  # a worker may reach its scratch folder, never list its neighbours
    return folder


def _connect(config: pytest.Config, state: State, grade_dir: Path) -> None:
    """Start the submission's worker; take its metadata (a bad adapter is a usage error)."""
    gib = float(config.getoption("--memory-limit"))
    limits = Limits(memory_bytes=int(gib * 2**30), cpu_s=int(state.budget or 1800.0) + 60)
    packages = [p for p in str(config.getoption("--worker-packages")).split(",") if p]
    folder = config.getoption("--submission-folder", None)
    target, iso, paths = plan(
        state.spec,
        packages=packages,
        hide=list(config.getoption("--hide")),
        limits=limits,
        cwd=str(state.origin_cwd),
        folder=folder,
    )
    conn = Connection(
        target,
        iso,
        grade_dir,
        folder=Path(folder) if folder else None,
        paths=paths,
        max_restarts=int(config.getoption("--max-restarts")),
    )
    state.conn = conn
    state.adapter = RemoteAdapter(conn, conn.start(), state.spec)
    state.unmatched += [f"notebook: dropped {note} (not Python)" for note in conn.notes]
    notes = conn.meta.get("notes", [])
    state.unmatched += [f"submission: {n}" for n in notes if isinstance(n, str)]
    state.meta = AdapterMeta.of(state.adapter)
    state.isolation = iso.summary()
    state.isolation["libraries"] = packages  # what --allow let the submission import
    state.isolation["hidden"] = list(dict.fromkeys(config.getoption("--hide")))


def pytest_configure(config: pytest.Config) -> None:
    for line in (
        "section(id): the chapter section a spec belongs to, e.g. section('2.3')",
        "requires(capability): the spec needs an optional adapter capability",
        "erratum: the spec pins the correct behaviour where a source is wrong",
        "mnist: needs the real MNIST files (skips with a reason without them)",
        "slow: takes more than a few seconds",
    ):
        config.addinivalue_line("markers", line)
    spec = config.getoption("--impl", None) or os.environ.get("DL_CH2_IMPL") or "numpy"
    state = State(spec=spec, role=_role(config))
    config.stash[_STATE_KEY] = state
    _CONFIG["config"] = config
    for opt in ("--spec-timeout", "--slow-spec-timeout"):
        value = config.getoption(opt)
        if not value > 0:
            raise pytest.UsageError(f"{opt} must be a positive number of seconds, got {value}")
    budget = config.getoption("--budget", None)
    if budget is not None and not budget > 0:
        raise pytest.UsageError(f"--budget must be a positive number of seconds, got {budget}")
    state.budget = budget
    try:
        _load_adapter(config, state)
    except _AdapterUsage as exc:
        _close(state)
        where = config.getoption("--usage-error-file", None)
        if where is None:
            raise pytest.UsageError(f"--impl {spec}: {exc}" if exc.impl else str(exc)) from None
        Path(where).write_text(str(exc), encoding="utf-8", errors="surrogateescape")  # a path
        raise pytest.UsageError() from None  # the supervisor prints it, in its own words
    state.isolation["spec_timeout_s"] = config.getoption("--spec-timeout")
    state.isolation["slow_spec_timeout_s"] = config.getoption("--slow-spec-timeout")
    state.isolation["budget_s"] = budget
    state.isolation["max_restarts"] = config.getoption("--max-restarts")
    _expectations(config, state)  # a bad file is a usage error now, not in a spec


class _AdapterUsage(Exception):
    """A usage error of the adapter (``impl``: it names the adapter) or of ``--dtype``."""

    def __init__(self, message: str, *, impl: bool = True) -> None:
        super().__init__(message)
        self.impl = impl


def _load_adapter(config: pytest.Config, state: State) -> None:
    """Start the submission's worker (xdist's controller reads the metadata instead); the
    one worker of a single-process grade writes the metadata for its supervisor."""
    meta_file = config.getoption("--adapter-metadata", None)
    try:
        if state.role == "controller" and meta_file:
            state.meta = AdapterMeta.from_json(Path(meta_file).read_text())
        else:
            state.grade_dir = _grade_dir(config, state)
            _connect(config, state, state.grade_dir)
            if state.role == "controller":  # it runs no spec: metadata was all it needed
                _close(state)
    except AdapterLoadError as exc:
        raise _AdapterUsage(str(exc)) from None
    meta = state.meta
    if meta is None:  # both branches above set it; a usage error rather than a crash
        raise _AdapterUsage("the adapter's metadata could not be read")
    if meta_file and state.role == "in-process" and not Path(meta_file).exists():
        atomic_write(meta_file, meta.to_json())
    dtype = config.getoption("--dtype", None)
    if dtype is not None and dtype not in KNOWN_DTYPES:
        raise _AdapterUsage(f"--dtype must be one of {KNOWN_DTYPES}, got {dtype!r}", impl=False)
    if dtype is not None and dtype not in meta.dtypes:
        raise _AdapterUsage(
            f"--dtype {dtype}: the adapter {meta.name} declares dtypes {meta.dtypes} only",
            impl=False,
        )
    state.dtype = dtype or meta.dtypes[0]
    state.device = meta.devices[0]


def _close(state: State) -> None:
    if state.conn is not None:
        state.conn.close()
        state.conn = None
    if state.own_grade_dir and state.grade_dir is not None:
        shutil.rmtree(state.grade_dir, ignore_errors=True)
        state.own_grade_dir = False


def pytest_unconfigure(config: pytest.Config) -> None:
    state = config.stash.get(_STATE_KEY, None)
    if state is None:
        return
    if state.timer is not None:
        state.timer.cancel()
    _close(state)


def _spec_timeout(config: pytest.Config, item: pytest.Item) -> float:
    if item.get_closest_marker("slow") is not None:
        return float(config.getoption("--slow-spec-timeout"))
    return float(config.getoption("--spec-timeout"))


def pytest_report_header(config: pytest.Config) -> list[str]:
    state = config.stash[_STATE_KEY]
    a = state.meta
    if a is None:
        return [f"dl-ch2 conformance {suite_version()}: adapter {state.spec!r} did not load"]
    lib_text = ", ".join(f"{k} {v}" for k, v in a.library_versions.items())
    iso = state.isolation
    budget = "none" if state.budget is None else f"{state.budget:g} s"
    return [
        f"dl-ch2 conformance suite {suite_version()}",
        f"implementation: {a.name} {a.version} (--impl {state.spec})",
        f"device: {state.device}; dtype: {state.dtype}; capabilities: "
        f"{', '.join(sorted(a.capabilities)) or 'none'}",
        f"python {platform.python_version()}, numpy {np.__version__}"
        + (f", {lib_text}" if lib_text else ""),
        f"isolation: {iso.get('level', 'see the report')}; namespaces: "
        f"{iso.get('namespaces', '-')}",
        f"spec timeout {iso['spec_timeout_s']:g} s (slow {iso['slow_spec_timeout_s']:g} s); "
        f"budget {budget}",
    ]


def _expectations(config: pytest.Config, state: State) -> list[tuple[str, str, str]]:
    path = config.getoption("--expectations", None)
    text: str | None = None
    meta = state.meta
    if path is None and meta is not None and meta.expectations_error:
        raise pytest.UsageError(f"the adapter's expectations file {meta.expectations_error}")
    if path is None and meta is not None and meta.expectations is not None:
        # read by the worker, with the submission's rights: the grader opens no path it names
        path, text = "the adapter's expectations file", meta.expectations
    elif path is None:
        builtin = EXPECTATIONS_DIR / f"{state.spec}.txt"
        path = str(builtin) if builtin.exists() else None
    if path is None:
        return []
    entries = []
    if text is None:
        full = Path(path) if Path(path).is_absolute() else state.origin_cwd / path
        try:
            text = full.read_text()
        except OSError as exc:
            raise pytest.UsageError(f"expectations file {path}: {exc.strerror or exc}") from exc
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        body, _, comment = line.partition("#")
        parts = body.split()
        if len(parts) != 2 or parts[0] not in ("skip", "xfail") or not comment.strip():
            raise pytest.UsageError(
                f"{path}:{n}: expected 'skip|xfail <test-id pattern>  # why', got {raw!r}"
            )
        entries.append((parts[0], parts[1], comment.strip()))
    return entries


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    state = config.stash[_STATE_KEY]
    if state.meta is None:
        return
    claimed = set(state.meta.capabilities)
    for item in items:
        for mark in item.iter_markers("requires"):
            cap = mark.args[0]
            if cap not in CAPABILITIES:
                raise pytest.UsageError(f"{item.nodeid}: unknown capability {cap!r}")
            if cap not in claimed:
                item.add_marker(pytest.mark.skip(reason=f"{NOT_CLAIMED}: {cap}"))
    entries = _expectations(config, state)
    used = set()
    for item in items:
        for i, (kind, pattern, why) in enumerate(entries):
            if fnmatch.fnmatch(item.nodeid, pattern) or fnmatch.fnmatch(item.name, pattern):
                used.add(i)
                reason = f"expectation file: {why}"
                if kind == "skip":
                    item.add_marker(pytest.mark.skip(reason=reason))
                else:
                    item.add_marker(pytest.mark.xfail(reason=reason, strict=True))
    for i, (kind, pattern, _why) in enumerate(entries):
        if i not in used:
            msg = f"expectation '{kind} {pattern}' matches no spec"
            state.unmatched.append(msg)
            warnings.warn(msg, stacklevel=1)


def _spec_infos(items: Sequence[pytest.Item]) -> dict[str, dict[str, Any]]:
    return {
        item.nodeid: {
            "section": _section_of(item),
            "erratum": item.get_closest_marker("erratum") is not None,
            "timeout": _timeout_of(item),
            "requires": _requires_of(item),
        }
        for item in items
    }


@pytest.hookimpl(trylast=True)
def pytest_collection_finish(session: pytest.Session) -> None:
    state = session.config.stash[_STATE_KEY]
    state.spec_info = _spec_infos(session.items)
    _set_collected(state, [item.nodeid for item in session.items])


def _requires_of(item: pytest.Item) -> list[str]:
    # the capabilities a spec needs: a rubric leaves out specs its assignment does not cover
    return sorted({str(m.args[0]) for m in item.iter_markers("requires")})


def _timeout_of(item: pytest.Item) -> float | None:
    return _spec_timeout(item.config, item)


def _set_collected(state: State, ids: Sequence[str]) -> None:
    if state.collected:
        return
    state.collected = list(ids)
    for nodeid in ids:
        state.results.setdefault(nodeid, _record(state, nodeid))


def _record(state: State, nodeid: str) -> dict[str, Any]:
    info = state.spec_info.get(nodeid, {})
    return {
        "id": nodeid,
        "section": info.get("section") or _section_from_id(nodeid),
        "outcome": None,
        "verb": None,
        "message": None,
        "erratum": bool(info.get("erratum", False)),
        "requires": list(info.get("requires", [])),
    }


def _section_from_id(nodeid: str) -> str:
    m = re.search(r"test_s(\d+)_(\d+)_", nodeid)
    return f"{m.group(1)}.{m.group(2)}" if m else "other"


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_node_collection_finished(node: Any, ids: Sequence[str]) -> None:
    _set_collected(node.config.stash[_STATE_KEY], ids)


def pytest_collectreport(report: pytest.CollectReport) -> None:
    if report.failed:
        config = _CONFIG.get("config")
        if config is not None:
            config.stash[_STATE_KEY].collect_errors.append(report.nodeid or "(session)")


def pytest_keyboard_interrupt(excinfo: pytest.ExceptionInfo[BaseException]) -> None:
    config = _CONFIG.get("config")
    if config is not None:
        state = config.stash[_STATE_KEY]
        text = str(excinfo.value).strip()
        state.interrupt = text or excinfo.typename
        if state.conn is not None:
            state.conn.close()  # a worker stuck in a verb ends now


@pytest.fixture(scope="session")
def impl_state(request: pytest.FixtureRequest) -> State:
    return request.config.stash[_STATE_KEY]


@pytest.fixture
def impl(impl_state: State, request: pytest.FixtureRequest) -> Iterator[Impl]:
    conn, adapter = impl_state.conn, impl_state.adapter
    if conn is None or adapter is None:
        pytest.fail("the adapter is not loaded", pytrace=False)
    conn.release()  # the previous spec's objects
    timeout = _spec_timeout(request.config, request.node)
    conn.deadline = min(time.monotonic() + timeout, impl_state.deadline)
    conn.timeout_text = (
        f"the per-spec timeout of {timeout:g} s (the worker was stopped from outside)"
        if conn.deadline < impl_state.deadline
        else "the grading budget"
    )
    yield Impl(adapter, impl_state.spec, impl_state.dtype, impl_state.device)
    conn.deadline = None
    if conn.restarts > conn.max_restarts and impl_state.stop_reason is None:
        impl_state.stop_reason = (
            f"worker restarts used up: the worker was lost {conn.restarts} times, at most "
            f"{conn.max_restarts} restarts allowed (--max-restarts)"
        )
        request.session.shouldstop = impl_state.stop_reason


def _section_of(item: pytest.Item) -> str:
    mark = item.get_closest_marker("section")
    return str(mark.args[0]) if mark else "other"


def _cut(text: str) -> str:
    if len(text) <= MESSAGE_LIMIT:
        return text
    return text[:MESSAGE_LIMIT] + f"\n... (cut: {len(text) - MESSAGE_LIMIT} more characters)"


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    # runs in the controlling process also under xdist, so the card sees every spec
    config = getattr(report, "config", None) or _CONFIG.get("config")
    if config is None:
        return
    state = config.stash[_STATE_KEY]
    if hasattr(config, "workerinput"):
        return  # an xdist process: its controller writes the report
    if report.nodeid not in state.results:
        state.collected.append(report.nodeid)
        state.results[report.nodeid] = _record(state, report.nodeid)
    rec = state.results[report.nodeid]
    props: dict[str, Any] = dict(report.user_properties)
    if props.get("section"):
        rec["section"] = props["section"]
    if props.get("erratum"):
        rec["erratum"] = True
    if props.get("requires"):
        rec["requires"] = list(props["requires"])
    if props.get("verbs"):
        verbs = [v for v in props["verbs"] if v not in _CONVERSIONS]
        rec["verb"] = verbs[0] if verbs else props["verbs"][0]
        rec["verbs"] = list(props["verbs"])
    crashed = report.when not in ("setup", "call", "teardown")
    if crashed and report.failed:
        rec["outcome"] = "failed"
        rec["message"] = "the grading process running this spec died (an error of the grader)"
    elif report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
        if report.skipped:
            reason = (
                report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
            )
            if hasattr(report, "wasxfail"):
                rec["outcome"], rec["message"] = "xfailed", str(report.wasxfail)
            elif NOT_CLAIMED in reason:
                rec["outcome"], rec["message"] = "not claimed", reason.split("Skipped: ")[-1]
            else:
                rec["outcome"], rec["message"] = "skipped", reason.split("Skipped: ")[-1]
        elif report.failed:
            rec["outcome"] = "failed"
            rec["message"] = props.get("message") or _short(report) or "failed"
        elif report.passed and rec["outcome"] is None:
            rec["outcome"] = "xpassed" if hasattr(report, "wasxfail") else "passed"
    elif report.when == "teardown" and report.failed:
        rec["outcome"], rec["message"] = "failed", _short(report) or "teardown failed"
    _snapshot(config, state, force=crashed)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Any:
    outcome = yield
    rep = outcome.get_result()
    if rep.failed and call.excinfo is not None:
        text = str(call.excinfo.value).strip()
        if not isinstance(call.excinfo.value, pytest.fail.Exception):
            # not the harness's own verdict: an error escaped the spec
            text = f"{call.excinfo.typename}: {text}" if text else call.excinfo.typename
        rep.user_properties.append(("message", _cut(text)))
    if call.when == "call":
        impl_obj = getattr(item, "funcargs", {}).get("impl")
        calls = getattr(impl_obj, "calls", None) or []
        verbs: list[str] = []
        for c in calls:
            m = re.search(r"impl\.(\w+)\(", str(getattr(c, "line", c)))
            if m and m.group(1) not in verbs:
                verbs.append(m.group(1))
        if verbs:
            rep.user_properties.append(("verbs", verbs))


def _budget_ran_out(state: State) -> None:
    """Timer thread: stop the run with a KeyboardInterrupt in the main thread."""
    state.stop_reason = f"the grading budget of {state.budget:g} s ran out"
    os.kill(os.getpid(), signal.SIGINT)


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    _CONFIG["config"] = session.config
    state = session.config.stash[_STATE_KEY]
    deadline = session.config.getoption("--deadline", None)
    if state.budget is None and deadline is None:
        return
    left = math.inf if state.budget is None else state.budget - (time.monotonic() - state.t0)
    if deadline is not None:
        left = min(left, deadline - time.time())
        state.budget = state.budget if state.budget is not None else left
    state.deadline = time.monotonic() + max(0.0, left)
    if state.role == "controller" or hasattr(session.config, "workerinput"):
        return  # under xdist the controller stops the run; its processes keep the deadline
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        # started from a background job or under nohup, which ignore SIGINT: the budget
        # (and the supervisor) stop this run with one, so take it back
        signal.signal(signal.SIGINT, signal.default_int_handler)
    state.timer = threading.Timer(max(0.0, left), _budget_ran_out, args=(state,))
    state.timer.daemon = True
    state.timer.start()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    state = session.config.stash[_STATE_KEY]
    if state.timer is not None:
        state.timer.cancel()
    state.exitstatus = int(exitstatus)


def pytest_itemcollected(item: pytest.Item) -> None:
    item.user_properties.append(("section", _section_of(item)))
    if item.get_closest_marker("erratum") is not None:
        item.user_properties.append(("erratum", True))
    item.user_properties.append(("requires", _requires_of(item)))


def _short(report: pytest.TestReport) -> str:
    text = str(report.longrepr) if report.longrepr is not None else ""
    return text.strip().splitlines()[-1][:300] if text.strip() else ""


def _completion(state: State, final: bool) -> tuple[bool, str | None, list[str]]:
    not_run = [i for i in state.collected if state.results[i]["outcome"] is None]
    if not final:
        return False, SNAPSHOT_REASON, not_run
    reason = None
    if state.stop_reason:
        reason = state.stop_reason
    elif state.interrupt:
        reason = f"interrupted: {state.interrupt}"
    elif state.collect_errors:
        reason = f"errors while collecting specs: {', '.join(state.collect_errors)}"
    elif state.exitstatus == int(pytest.ExitCode.INTERRUPTED):
        reason = "interrupted"
    elif state.exitstatus == int(pytest.ExitCode.INTERNAL_ERROR):
        reason = "internal error of the test runner"
    elif not_run:
        reason = f"{len(not_run)} collected specs did not run"
    return reason is None, reason, not_run


def build_report(state: State, *, final: bool = True) -> dict[str, Any]:
    """The report card as JSON-able data (schema ``dl-ch2-conformance-report/2``)."""
    complete, reason, not_run = _completion(state, final)
    specs = []
    for nodeid in state.collected:
        rec = dict(state.results[nodeid])
        if rec["outcome"] is None:
            rec["outcome"] = "not run"
        if rec["outcome"] in ("passed", "xpassed"):
            rec["message"] = None
        specs.append(rec)
    report = empty_report(state.meta, state.spec, state.dtype, state.device)
    isolation = dict(state.isolation)
    if state.conn is not None:  # the submission ran once per start (its import, its cells)
        isolation["worker_starts"] = state.conn.generation
    report.update(
        {
            "complete": complete,
            "incomplete_reason": reason,
            "not_run": sorted(not_run),
            "specs": sorted(specs, key=lambda r: r["id"]),
            "warnings": list(state.unmatched),
            "isolation": isolation,
        }
    )
    fill_counts(report)
    return report


def _snapshot(config: pytest.Config, state: State, *, force: bool = False) -> None:
    """Write the report so far (marked incomplete) now and then, in case the run is killed."""
    path = config.getoption("--report-json", None)
    now = time.monotonic()
    if not path or (not force and now - state.last_snapshot < 1.0):
        return
    state.last_snapshot = now
    atomic_write(path, json.dumps(build_report(state, final=False), indent=1) + "\n")


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    state = config.stash[_STATE_KEY]
    if hasattr(config, "workerinput") or state.meta is None or config.option.collectonly:
        return
    state.exitstatus = int(exitstatus)
    report = build_report(state)
    md = report_markdown(report)
    terminalreporter.write_sep("=", "dl-ch2 conformance report card")
    terminalreporter.write_line(md)
    if config.getoption("--report-json", None):
        atomic_write(config.getoption("--report-json"), json.dumps(report, indent=1) + "\n")
    if config.getoption("--report-md", None):
        atomic_write(config.getoption("--report-md"), md)
