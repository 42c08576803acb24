"""The course staff's rubric: points and visibility per spec, and what an assignment requires.

A rubric is a small TOML file (the default, ``rubric.default.toml`` beside this module, gives
every spec 1 point and requires no capability)::

    [assignment]
    requires = ["training", "autodiff"]  # capabilities every submission must claim
    uses_torch = false                   # the autograder bundle installs torch only if true
    adapter = "adapter.py"               # else: the single .py file exposing ADAPTER
    # dtype = "float64"                  # default: the adapter's first

    [grading]
    # spec_timeout = 10                  # seconds per spec (the grader's default otherwise)
    # budget = 300                       # seconds for the whole grade (default 600)
    # jobs = 1                           # pytest-xdist workers per grade

    [points]
    default = 1.0                        # points per spec
    [points.sections]
    "2.5" = 2.0                          # points per spec of a section

    [visibility]
    default = "visible"                  # visible, hidden, after_due_date, after_published

    [[rule]]                             # the last matching rule wins
    match = "*mnist*"                    # fnmatch on the spec id (file::name) or its name
    points = 0
    visibility = "after_due_date"

``score_report`` turns a grader report (JSON schema ``dl-ch2-conformance-report/*``) into
scored entries; ``conformance.grading.gradescope`` and ``conformance.grading.grade_all`` both use
it, so a submission gets the same score on Gradescope and in a folder grade.
"""

from __future__ import annotations

import fnmatch
import hashlib
import math
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conformance.adapter import CAPABILITIES

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

__all__ = [
    "DEFAULT_RUBRIC",
    "VISIBILITIES",
    "Rubric",
    "Rule",
    "ScoredSpec",
    "load_rubric",
    "parse_rubric",
    "score_report",
]

DEFAULT_RUBRIC = Path(__file__).parent / "rubric.default.toml"
VISIBILITIES = ("visible", "hidden", "after_due_date", "after_published")

_NUMERIC = re.compile(r"^[0-9]+(\.[0-9]+)*$")
_KEYS: dict[str, set[str]] = {
    "": {"assignment", "grading", "points", "visibility", "rule"},
    "assignment": {"requires", "uses_torch", "adapter", "dtype"},
    "grading": {"spec_timeout", "budget", "jobs"},
    "points": {"default", "sections"},
    "visibility": {"default"},
    "rule": {"match", "points", "visibility"},
}


@dataclass(frozen=True)
class Rule:
    """Points and/or visibility for the specs whose id or name matches ``match``."""

    match: str
    points: float | None = None
    visibility: str | None = None

    def matches(self, spec_id: str) -> bool:
        name = spec_id.rpartition("::")[2]
        return fnmatch.fnmatchcase(spec_id, self.match) or fnmatch.fnmatchcase(name, self.match)


@dataclass(frozen=True)
class Rubric:
    """A parsed rubric; ``text`` is the file's content, hashed into ``digest``."""

    requires: frozenset[str] = frozenset()
    uses_torch: bool = False
    adapter: str = "adapter.py"
    dtype: str | None = None
    spec_timeout: float | None = None
    budget: float | None = None
    jobs: int | None = None
    default_points: float = 1.0
    section_points: Mapping[str, float] = field(default_factory=dict)
    default_visibility: str = "visible"
    rules: tuple[Rule, ...] = ()
    text: str = ""

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()

    def points_for(self, spec_id: str, section: str) -> float:
        points = self.section_points.get(section, self.default_points)
        for rule in self.rules:
            if rule.points is not None and rule.matches(spec_id):
                points = rule.points
        return points

    def visibility_for(self, spec_id: str) -> str:
        visibility = self.default_visibility
        for rule in self.rules:
            if rule.visibility is not None and rule.matches(spec_id):
                visibility = rule.visibility
        return visibility


def _check_keys(table: Mapping[str, Any], where: str, source: str) -> None:
    unknown = sorted(set(table) - _KEYS[where])
    if unknown:
        label = f"[{where}]" if where else "the top level"
        raise ValueError(
            f"rubric {source}: unknown key(s) {unknown} in {label}; known: {sorted(_KEYS[where])}"
        )


def _table(doc: Mapping[str, Any], key: str, source: str) -> Mapping[str, Any]:
    value = doc.get(key, {})
    if not isinstance(value, Mapping):
        raise ValueError(f"rubric {source}: [{key}] must be a table, got {type(value).__name__}")
    _check_keys(value, key, source)
    return value


def _points(value: Any, what: str, source: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"rubric {source}: {what} must be a number, got {value!r}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"rubric {source}: {what} must be finite and >= 0, got {value!r}")
    return float(value)


def _visibility(value: Any, what: str, source: str) -> str:
    if value not in VISIBILITIES:
        raise ValueError(f"rubric {source}: {what} must be one of {VISIBILITIES}, got {value!r}")
    return str(value)


def _optional_positive(value: Any, what: str, source: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"rubric {source}: {what} must be a positive number, got {value!r}")
    return float(value)


def parse_rubric(text: str, source: str = "<string>") -> Rubric:
    """Parse and validate a rubric; a ValueError names the offending key and value."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"rubric {source}: not valid TOML: {exc}") from exc
    _check_keys(doc, "", source)
    assignment = _table(doc, "assignment", source)
    grading = _table(doc, "grading", source)
    points = _table(doc, "points", source)
    visibility = _table(doc, "visibility", source)

    requires = assignment.get("requires", [])
    if not isinstance(requires, list) or not all(isinstance(c, str) for c in requires):
        raise ValueError(
            f"rubric {source}: assignment.requires must be a list of strings, got {requires!r}"
        )
    unknown = sorted(set(requires) - set(CAPABILITIES))
    if unknown:
        raise ValueError(
            f"rubric {source}: assignment.requires names unknown capabilities {unknown}; "
            f"known: {sorted(CAPABILITIES)}"
        )
    uses_torch = assignment.get("uses_torch", False)
    if not isinstance(uses_torch, bool):
        raise ValueError(f"rubric {source}: assignment.uses_torch must be true or false")
    adapter = assignment.get("adapter", "adapter.py")
    if not isinstance(adapter, str) or not adapter.endswith(".py") or "/" in adapter:
        raise ValueError(
            f"rubric {source}: assignment.adapter must be a file name ending in .py, "
            f"got {adapter!r}"
        )
    dtype = assignment.get("dtype")
    if dtype is not None and dtype not in ("float32", "float64"):
        raise ValueError(f"rubric {source}: assignment.dtype must be float32 or float64")
    jobs = grading.get("jobs")
    if jobs is not None and (isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1):
        raise ValueError(f"rubric {source}: grading.jobs must be an integer >= 1, got {jobs!r}")

    sections = points.get("sections", {})
    if not isinstance(sections, Mapping):
        raise ValueError(f"rubric {source}: points.sections must be a table")
    raw_rules = doc.get("rule", [])
    if not isinstance(raw_rules, list):
        raise ValueError(f"rubric {source}: rule must be an array of tables ([[rule]])")
    rules = []
    for n, raw in enumerate(raw_rules, 1):
        if not isinstance(raw, Mapping):
            raise ValueError(f"rubric {source}: rule {n} must be a table")
        _check_keys(raw, "rule", source)
        match = raw.get("match")
        if not isinstance(match, str) or not match:
            raise ValueError(f"rubric {source}: rule {n} needs a non-empty 'match' pattern")
        rules.append(
            Rule(
                match=match,
                points=None
                if "points" not in raw
                else _points(raw["points"], f"rule {n} points", source),
                visibility=None
                if "visibility" not in raw
                else _visibility(raw["visibility"], f"rule {n} visibility", source),
            )
        )
    return Rubric(
        requires=frozenset(requires),
        uses_torch=uses_torch,
        adapter=adapter,
        dtype=dtype,
        spec_timeout=_optional_positive(grading.get("spec_timeout"), "spec_timeout", source),
        budget=_optional_positive(grading.get("budget"), "budget", source),
        jobs=jobs,
        default_points=_points(points.get("default", 1.0), "points.default", source),
        section_points={
            str(k): _points(v, f"points.sections.{k}", source) for k, v in sections.items()
        },
        default_visibility=_visibility(
            visibility.get("default", "visible"), "visibility.default", source
        ),
        rules=tuple(rules),
        text=text,
    )


def load_rubric(path: str | Path | None = None) -> Rubric:
    """Load a rubric file (default: ``rubric.default.toml``)."""
    target = Path(path) if path is not None else DEFAULT_RUBRIC
    try:
        text = target.read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"rubric {target}: cannot read it ({exc.strerror})") from exc
    return parse_rubric(text, str(target))


@dataclass(frozen=True)
class ScoredSpec:
    """One spec as a course grades it: points earned out of points possible."""

    id: str
    section: str
    number: str
    score: float
    max_score: float
    passed: bool
    output: str
    visibility: str


def _capability_of(message: str) -> str:
    # the plugin's reason reads "not claimed: <capability>"
    return message.rpartition(":")[2].strip()


def score_report(report: Mapping[str, Any], rubric: Rubric) -> tuple[list[ScoredSpec], list[str]]:
    """Score a grader report with ``rubric``; returns (scored specs, notes for the reader).

    - passed (or a non-strict xpass): full points;
    - failed, crashed, not run (an incomplete grade), xfailed, or skipped by the
      submission's own expectations file: 0 points, status failed;
    - not claimed: 0 points if the rubric requires that capability, else left out;
    - skipped on the grader for another reason (e.g. MNIST files missing): left out, noted.
    """
    notes: list[str] = []
    not_run = set(report.get("not_run") or [])
    reason = report.get("incomplete_reason") or "the grade did not finish"
    rows: list[tuple[str, str, str, str]] = []  # id, section, outcome, message
    seen: set[str] = set()
    for spec in report.get("specs", []):
        spec_id = str(spec["id"])
        seen.add(spec_id)
        outcome = spec.get("outcome")
        if spec_id in not_run or outcome is None:
            outcome = "not run"
        rows.append(
            (spec_id, str(spec.get("section", "other")), str(outcome), spec.get("message") or "")
        )
    for spec_id in sorted(not_run - seen):
        rows.append((spec_id, _section_from_id(spec_id), "not run", ""))
    skipped_env: list[str] = []
    counters: dict[str, int] = {}
    scored: list[ScoredSpec] = []
    for spec_id, section, outcome, message in rows:
        points = rubric.points_for(spec_id, section)
        if outcome == "not claimed":
            cap = _capability_of(message)
            if cap not in rubric.requires:
                continue
            passed, output = (
                False,
                (
                    f"The assignment requires the capability {cap!r}, which the submission "
                    "does not claim (add it to ADAPTER.capabilities and implement its verbs)."
                ),
            )
        elif outcome == "skipped":
            if message.startswith("expectation file"):
                passed, output = (
                    False,
                    (
                        f"Skipped by the submission's own expectations file ({message}); "
                        "counted as failed."
                    ),
                )
            else:
                skipped_env.append(f"{spec_id} ({message})")
                continue
        elif outcome in ("passed", "xpassed"):
            passed, output = True, ""
        elif outcome == "not run":
            passed, output = False, f"Not run: the grade is incomplete ({reason})."
        elif outcome == "xfailed":
            passed, output = False, f"Marked as expected to fail by the submission: {message}"
        else:
            passed, output = False, message or f"{outcome}"
        counters[section] = counters.get(section, 0) + 1
        scored.append(
            ScoredSpec(
                id=spec_id,
                section=section,
                number=f"{section if _NUMERIC.match(section) else '0'}.{counters[section]}",
                score=points if passed else 0.0,
                max_score=points,
                passed=passed,
                output=output,
                visibility=rubric.visibility_for(spec_id),
            )
        )
    if skipped_env:
        notes.append(
            f"{len(skipped_env)} spec(s) skipped on the grader and not scored: "
            + "; ".join(skipped_env)
        )
    return scored, notes


def _section_from_id(spec_id: str) -> str:
    # specs/test_s2_3_tensor_operations.py::... -> 2.3
    stem = spec_id.split("::")[0].rpartition("/")[2]
    parts = stem.split("_")
    if len(parts) > 3 and parts[0] == "test" and parts[1].startswith("s"):
        return f"{parts[1][1:]}.{parts[2]}"
    return "other"
