"""The report card: its JSON document (schema ``dl-ch2-conformance-report/2``) and Markdown.

Written by the grader's own process only. Totals always add up: ``collected`` = passed +
failed + not run + not claimed + skipped + xfailed.
"""

from __future__ import annotations

import functools
import platform
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from conformance import __version__ as SUITE_VERSION

__all__ = [
    "NOT_CLAIMED",
    "REPORT_SCHEMA",
    "SECTIONS",
    "SNAPSHOT_REASON",
    "empty_report",
    "fill_counts",
    "report_markdown",
    "suite_version",
]

REPORT_SCHEMA = "dl-ch2-conformance-report/2"
NOT_CLAIMED = "not claimed"
#: incomplete_reason of the snapshots written while a grade runs (replaced at its end).
SNAPSHOT_REASON = "the grade did not finish (snapshot written while it ran)"

SECTIONS = {
    "2.1": "§2.1 A first look at a neural network",
    "2.2": "§2.2 Data representations",
    "2.3": "§2.3 Tensor operations",
    "2.4": "§2.4 Gradient-based optimization",
    "2.5": "§2.5 The first example, from scratch",
}


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


@functools.lru_cache(maxsize=1)
def suite_version() -> str:
    sha = _git_sha()
    return f"{SUITE_VERSION}+g{sha}" if sha else SUITE_VERSION


def empty_report(meta: Any, spec: str, dtype: str, device: str) -> dict[str, Any]:
    """A report with no specs (what a grade that died before collecting anything leaves)."""
    report: dict[str, Any] = {
        "schema": REPORT_SCHEMA,
        "suite_version": suite_version(),
        "implementation": {
            "spec": spec,
            "name": getattr(meta, "name", None),
            "version": getattr(meta, "version", None),
            "capabilities": sorted(getattr(meta, "capabilities", [])),
            "library_versions": dict(getattr(meta, "library_versions", {}) or {}),
        },
        "device": device,
        "dtype": dtype,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "platform": sys.platform,
        "complete": False,
        "incomplete_reason": SNAPSHOT_REASON,
        "not_run": [],
        "totals": {},
        "sections": {},
        "specs": [],
        "warnings": [],
    }
    fill_counts(report)
    return report


_TOTAL_KEYS = {
    "passed": "passed",
    "xpassed": "passed",
    "failed": "failed",
    "not run": "not_run",
    "not claimed": "not_claimed",
    "skipped": "skipped",
    "xfailed": "xfailed",
}


def fill_counts(report: dict[str, Any]) -> None:
    """Totals and per-section counts from ``report["specs"]``: they always add up."""
    totals = dict.fromkeys(["passed", "failed", "not_run", "not_claimed", "skipped", "xfailed"], 0)
    by_section: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for r in report["specs"]:
        key = _TOTAL_KEYS[r["outcome"]]
        totals[key] += 1
        by_section[r["section"]][key] += 1
    report["totals"] = {"collected": len(report["specs"]), **totals}
    summary = {}
    for sec in sorted(by_section):
        counts = by_section[sec]
        judged = counts["passed"] + counts["failed"] + counts["not_run"]
        summary[sec] = {
            "title": SECTIONS.get(sec, sec),
            "passed": counts["passed"],
            "failed": counts["failed"],
            "not_run": counts["not_run"],
            "not_claimed": counts["not_claimed"],
            "skipped": counts["skipped"],
            "xfailed": counts["xfailed"],
            "total": sum(counts.values()),
            "percent_passed": round(100.0 * counts["passed"] / judged, 1) if judged else None,
        }
    report["sections"] = summary


def _limits_line(iso: dict[str, Any]) -> str:
    """The grade's limits as the options that set them (issue 29: every option shows)."""
    if "budget_s" not in iso:
        return ""
    parts = []
    if iso.get("budget_s") is not None:
        parts.append(f"budget {iso['budget_s']:g} s")
    parts.append(f"spec timeout {iso.get('spec_timeout_s', 0):g} s")
    parts.append(f"worker restarts {iso.get('max_restarts')}")
    data = (iso.get("limits") or {}).get("RLIMIT_DATA")
    cap = iso.get("memory_cap") or {}
    memory = f"memory {data / 2**30:g} GiB" if data else "memory not capped"
    if cap.get("mechanism"):
        memory += f" ({cap['mechanism']})"
    parts.append(memory)
    if iso.get("libraries"):
        parts.append("libraries " + ", ".join(iso["libraries"]))
    if iso.get("hidden"):
        parts.append("hidden " + ", ".join(iso["hidden"]))
    return "limits: " + "; ".join(parts)


def report_markdown(report: dict[str, Any]) -> str:
    impl = report["implementation"]
    lines = [
        f"## dl-ch2 conformance: {impl['name']} {impl['version']}",
        "",
        f"suite {report['suite_version']}, device {report['device']}, dtype {report['dtype']}, "
        f"python {report['python']}, numpy {report['numpy']}",
        "",
    ]
    level = (report.get("isolation") or {}).get("level")
    if level:
        lines += [f"isolation: {level}", ""]
    limits = _limits_line(report.get("isolation") or {})
    if limits:
        lines += [limits, ""]
    if not report.get("complete", False):
        lines += [
            f"**INCOMPLETE**: {report.get('incomplete_reason')}; "
            f"{len(report.get('not_run', []))} specs not run, counted as not passed.",
            "",
        ]
    lines += [
        "| section | passed | failed | not run | not claimed | skipped | total | passed % |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for _sec, s in report["sections"].items():
        pct = "-" if s["percent_passed"] is None else f"{s['percent_passed']:.1f}"
        lines.append(
            f"| {s['title']} | {s['passed']} | {s['failed']} | {s['not_run']} | "
            f"{s['not_claimed']} | {s['skipped'] + s['xfailed']} | {s['total']} | {pct} |"
        )
    t = report["totals"]
    judged = t["passed"] + t["failed"] + t["not_run"]
    pct = f"{100.0 * t['passed'] / judged:.1f}" if judged else "-"
    lines.append(
        f"| **all** | {t['passed']} | {t['failed']} | {t['not_run']} | {t['not_claimed']} | "
        f"{t['skipped'] + t['xfailed']} | {t['collected']} | {pct} |"
    )
    failed = [r for r in report["specs"] if r["outcome"] == "failed"]
    if failed:
        lines += ["", "Failed specs:", ""]
        lines += [f"- `{r['id']}`: {(r['message'] or '').splitlines()[0]}" for r in failed]
    not_run = report.get("not_run", [])
    if not_run:
        lines += ["", "Specs not run (counted as not passed):", ""]
        lines += [f"- `{i}`" for i in not_run[:25]]
        if len(not_run) > 25:
            lines.append(f"- ... and {len(not_run) - 25} more (see the JSON report)")
    for w in report["warnings"]:
        lines.append(f"\nwarning: {w}")
    return "\n".join(lines) + "\n"
