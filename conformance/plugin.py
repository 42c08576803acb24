"""The pytest plugin behind ``pytest conformance --impl ...``.

Options: ``--impl`` (or ``$DL_CH2_IMPL``), ``--dtype``, ``--report-json``, ``--report-md``,
``--expectations``. It loads the adapter, skips specs needing unclaimed capabilities as
"not claimed", applies expectation files, and prints a report card per chapter section.
"""

from __future__ import annotations

import fnmatch
import json
import os
import platform
import subprocess
import sys
import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conformance import __version__ as SUITE_VERSION
from conformance.adapter import CAPABILITIES, AdapterLoadError, load_adapter
from conformance.harness import Impl
from dl_ch2.tools.atomic import atomic_write

REPORT_SCHEMA = "dl-ch2-conformance-report/1"
NOT_CLAIMED = "not claimed"

SECTIONS = {
    "2.1": "§2.1 A first look at a neural network",
    "2.2": "§2.2 Data representations",
    "2.3": "§2.3 Tensor operations",
    "2.4": "§2.4 Gradient-based optimization",
    "2.5": "§2.5 The first example, from scratch",
}
EXPECTATIONS_DIR = Path(__file__).parent / "expectations"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("dl-ch2 conformance")
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


@dataclass
class State:
    spec: str
    adapter: Any = None
    load_error: str | None = None
    dtype: str = "float64"
    device: str = "cpu"
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    unmatched: list[str] = field(default_factory=list)


_STATE_KEY = pytest.StashKey[State]()


def _git_sha() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            cwd=Path(__file__).parent,
            timeout=5,
        )
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def suite_version() -> str:
    sha = _git_sha()
    return f"{SUITE_VERSION}+g{sha}" if sha else SUITE_VERSION


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
    state = State(spec=spec)
    try:
        state.adapter = load_adapter(spec)
    except AdapterLoadError as exc:
        raise pytest.UsageError(f"--impl {spec}: {exc}") from exc
    if state.adapter is not None:
        dtypes = list(getattr(state.adapter, "dtypes", ["float64"]))
        state.dtype = config.getoption("--dtype", None) or dtypes[0]
        if state.dtype not in TOLERANCE_DTYPES:
            raise pytest.UsageError(f"--dtype must be one of {TOLERANCE_DTYPES}")
        state.device = next(iter(getattr(state.adapter, "devices", ["cpu"])))
    config.stash[_STATE_KEY] = state


TOLERANCE_DTYPES = ("float32", "float64")


def pytest_report_header(config: pytest.Config) -> list[str]:
    state = config.stash[_STATE_KEY]
    if state.adapter is None:
        return [
            f"dl-ch2 conformance {suite_version()}: adapter {state.spec!r} FAILED TO LOAD: "
            f"{state.load_error}"
        ]
    a = state.adapter
    libs = getattr(a, "library_versions", None) or {}
    lib_text = ", ".join(f"{k} {v}" for k, v in libs.items())
    return [
        f"dl-ch2 conformance suite {suite_version()}",
        f"implementation: {a.name} {a.version} (--impl {state.spec})",
        f"device: {state.device}; dtype: {state.dtype}; capabilities: "
        f"{', '.join(sorted(a.capabilities)) or 'none'}",
        f"python {platform.python_version()}, numpy {np.__version__}"
        + (f", {lib_text}" if lib_text else ""),
    ]


def _expectations(config: pytest.Config, state: State) -> list[tuple[str, str, str]]:
    path = config.getoption("--expectations", None)
    if path is None and state.adapter is not None:
        path = getattr(state.adapter, "expectations_file", None)
        if path is None:
            builtin = EXPECTATIONS_DIR / f"{state.spec}.txt"
            path = str(builtin) if builtin.exists() else None
    if path is None:
        return []
    entries = []
    for n, raw in enumerate(Path(path).read_text().splitlines(), 1):
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
    if state.adapter is None:
        return
    claimed = set(state.adapter.capabilities)
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


@pytest.fixture(scope="session")
def impl_state(request: pytest.FixtureRequest) -> State:
    return request.config.stash[_STATE_KEY]


@pytest.fixture
def impl(impl_state: State) -> Impl:
    if impl_state.adapter is None:
        pytest.fail(f"the adapter could not be loaded: {impl_state.load_error}", pytrace=False)
    return Impl(impl_state.adapter, impl_state.spec, impl_state.dtype, impl_state.device)


def _section_of(item: pytest.Item) -> str:
    mark = item.get_closest_marker("section")
    return str(mark.args[0]) if mark else "other"


@pytest.hookimpl(trylast=True)
def pytest_collection_finish(session: pytest.Session) -> None:
    state = session.config.stash[_STATE_KEY]
    for item in session.items:
        state.results[item.nodeid] = {
            "id": item.nodeid,
            "section": _section_of(item),
            "outcome": None,
            "message": "",
            "erratum": item.get_closest_marker("erratum") is not None,
        }


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    # runs in the controlling process also under xdist, so the card sees every spec
    config = getattr(report, "config", None) or _CONFIG.get("config")
    if config is None:
        return
    state = config.stash[_STATE_KEY]
    rec = state.results.setdefault(
        report.nodeid,
        {"id": report.nodeid, "section": "other", "outcome": None, "message": "", "erratum": False},
    )
    section = dict(report.user_properties).get("section")
    if section:
        rec["section"] = section
    if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
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
            rec["message"] = dict(report.user_properties).get("message") or _short(report)
        elif report.passed and rec["outcome"] is None:
            rec["outcome"] = "xpassed" if hasattr(report, "wasxfail") else "passed"
    elif report.when == "teardown" and report.failed:
        rec["outcome"], rec["message"] = "failed", _short(report)


_CONFIG: dict[str, pytest.Config] = {}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Any:
    outcome = yield
    rep = outcome.get_result()
    if rep.failed and call.excinfo is not None:
        text = str(call.excinfo.value).strip()
        first = text.splitlines()[0] if text else call.excinfo.typename
        rep.user_properties.append(("message", first[:300]))


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    _CONFIG["config"] = session.config


def pytest_itemcollected(item: pytest.Item) -> None:
    item.user_properties.append(("section", _section_of(item)))


def _short(report: pytest.TestReport) -> str:
    text = str(report.longrepr) if report.longrepr is not None else ""
    return text.strip().splitlines()[-1][:300] if text.strip() else ""


def build_report(state: State) -> dict[str, Any]:
    a = state.adapter
    specs = [r for r in state.results.values() if r["outcome"] is not None]
    by_section: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for r in specs:
        by_section[r["section"]][r["outcome"]] += 1
    summary = {}
    for sec in sorted(by_section):
        counts = by_section[sec]
        total = sum(counts.values())
        judged = counts["passed"] + counts["failed"] + counts["xpassed"]
        summary[sec] = {
            "title": SECTIONS.get(sec, sec),
            "passed": counts["passed"],
            "failed": counts["failed"],
            "not_claimed": counts["not claimed"],
            "skipped": counts["skipped"],
            "xfailed": counts["xfailed"],
            "total": total,
            "percent_passed": round(100.0 * counts["passed"] / judged, 1) if judged else None,
        }
    return {
        "schema": REPORT_SCHEMA,
        "suite_version": suite_version(),
        "implementation": {
            "spec": state.spec,
            "name": getattr(a, "name", None),
            "version": getattr(a, "version", None),
            "capabilities": sorted(getattr(a, "capabilities", [])),
            "library_versions": dict(getattr(a, "library_versions", {}) or {}),
        },
        "device": state.device,
        "dtype": state.dtype,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "platform": sys.platform,
        "sections": summary,
        "specs": sorted(specs, key=lambda r: r["id"]),
        "warnings": list(state.unmatched),
    }


def report_markdown(report: dict[str, Any]) -> str:
    impl = report["implementation"]
    lines = [
        f"## dl-ch2 conformance: {impl['name']} {impl['version']}",
        "",
        f"suite {report['suite_version']}, device {report['device']}, dtype {report['dtype']}, "
        f"python {report['python']}, numpy {report['numpy']}",
        "",
        "| section | passed | failed | not claimed | skipped | total | passed % |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    tot: dict[str, int] = defaultdict(int)
    for _sec, s in report["sections"].items():
        pct = "-" if s["percent_passed"] is None else f"{s['percent_passed']:.1f}"
        lines.append(
            f"| {s['title']} | {s['passed']} | {s['failed']} | {s['not_claimed']} | "
            f"{s['skipped'] + s['xfailed']} | {s['total']} | {pct} |"
        )
        for k in ("passed", "failed", "not_claimed", "skipped", "xfailed", "total"):
            tot[k] += s[k]
    judged = tot["passed"] + tot["failed"]
    pct = f"{100.0 * tot['passed'] / judged:.1f}" if judged else "-"
    lines.append(
        f"| **all** | {tot['passed']} | {tot['failed']} | {tot['not_claimed']} | "
        f"{tot['skipped'] + tot['xfailed']} | {tot['total']} | {pct} |"
    )
    failed = [r for r in report["specs"] if r["outcome"] == "failed"]
    if failed:
        lines += ["", "Failed specs:", ""]
        lines += [f"- `{r['id']}`: {r['message']}" for r in failed]
    for w in report["warnings"]:
        lines.append(f"\nwarning: {w}")
    return "\n".join(lines) + "\n"


def _write(path: str, text: str) -> None:
    atomic_write(path, text)


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    state = config.stash[_STATE_KEY]
    if not state.results:
        return
    report = build_report(state)
    md = report_markdown(report)
    terminalreporter.write_sep("=", "dl-ch2 conformance report card")
    terminalreporter.write_line(md)
    if config.getoption("--report-json", None):
        _write(config.getoption("--report-json"), json.dumps(report, indent=1) + "\n")
    if config.getoption("--report-md", None):
        _write(config.getoption("--report-md"), md)
