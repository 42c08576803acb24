"""The course staff's rubric: what an assignment covers, and points by objective or by spec.

A rubric is a small TOML file. The default, ``rubric.default.toml`` beside this module, is the
course rubric: the chapter's learning objectives, each worth points, earned by mastery::

    [assignment]
    covers = ["naive_ops", "training"]   # capabilities the assignment covers (default: the
                                         # chapter's, CHAPTER_CAPABILITIES); every one is
                                         # required: a spec of a covered capability the
                                         # submission does not claim scores 0; specs needing
                                         # a capability not covered are left out
    requires = ["input_checks"]          # (older key) covered too, on top of ``covers``
    uses_torch = false                   # the autograder bundle installs torch only if true
    adapter = "adapter.py"               # else: the single .py file exposing ADAPTER
    # dtype = "float64"                  # default: the adapter's first

    [grading]
    # spec_timeout = 10                  # seconds per spec (the grader's default otherwise)
    # budget = 300                       # seconds for the whole grade (default 600)
    # jobs = 1                           # pytest-xdist workers per grade

    [points]
    credit = "mastery"                   # objectives: "mastery" (all its specs pass, or 0)
                                         # or "partial" (points x the fraction passed)
    default = 1.0                        # points per spec outside every objective
    [points.sections]
    "2.5" = 2.0                          # points per spec of a section (outside objectives)

    [visibility]
    default = "visible"                  # visible, hidden, after_due_date, after_published

    [[objective]]                        # a learning objective; the last matching one wins
    name = "The loss"
    points = 15
    section = "2.5"                      # its Gradescope tag (default: its first spec's)
    match = ["test_loss_*"]              # fnmatch on the spec id (file::name) or its name
    # visibility = "visible"             # of its entry (default: visibility.default)

    [[rule]]                             # the last matching rule wins
    match = "*mnist*"                    # fnmatch on the spec id (file::name) or its name
    points = 0                           # (points: specs outside objectives only)
    visibility = "after_due_date"

``score_report`` turns a grader report (JSON schema ``dl-ch2-conformance-report/*``) into
scored entries: one per objective that has a spec in the assignment (its points), then one
per spec (its own points outside objectives; 0 of 0 inside one, for its pass/fail and message).
``conformance.grading.gradescope`` and ``conformance.grading.grade_all`` both use it, so a
submission gets the same score on Gradescope and in a folder grade. Percentages are the
rubric's concern: a plain ``dl-ch2 grade`` without a rubric keeps its per-spec report.
"""

from __future__ import annotations

import fnmatch
import hashlib
import math
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from conformance.adapter import CAPABILITIES, CHAPTER_CAPABILITIES

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

__all__ = [
    "CREDITS",
    "DEFAULT_RUBRIC",
    "VISIBILITIES",
    "Objective",
    "Rubric",
    "Rule",
    "ScoredSpec",
    "load_rubric",
    "parse_rubric",
    "score_report",
]

DEFAULT_RUBRIC = Path(__file__).parent / "rubric.default.toml"
VISIBILITIES = ("visible", "hidden", "after_due_date", "after_published")
CREDITS = ("mastery", "partial")

_NUMERIC = re.compile(r"^[0-9]+(\.[0-9]+)*$")
_ABSENT = re.compile(r"not submitted: the submission defines no (\w+)")
_KEYS: dict[str, set[str]] = {
    "": {"assignment", "grading", "points", "visibility", "rule", "objective"},
    "assignment": {"covers", "requires", "uses_torch", "adapter", "dtype", "extensions"},
    "grading": {"spec_timeout", "budget", "jobs"},
    "points": {"default", "sections", "credit"},
    "visibility": {"default"},
    "rule": {"match", "points", "visibility"},
    "objective": {
        "name",
        "points",
        "match",
        "section",
        "visibility",
        "after",
        "extension",
        "owns",
    },
}


@dataclass(frozen=True)
class Rule:
    """Points and/or visibility for the specs whose id or name matches ``match``."""

    match: str
    points: float | None = None
    visibility: str | None = None

    def matches(self, spec_id: str) -> bool:
        return _matches(self.match, spec_id)


def _matches(pattern: str, spec_id: str) -> bool:
    name = spec_id.rpartition("::")[2]
    return fnmatch.fnmatchcase(spec_id, pattern) or fnmatch.fnmatchcase(name, pattern)


@dataclass(frozen=True)
class Objective:
    """A learning objective: the specs matching ``match``, worth ``points`` together."""

    name: str
    points: float
    match: tuple[str, ...]
    section: str | None = None
    visibility: str | None = None
    after: tuple[str, ...] = ()  # prerequisite objectives: a failure they explain is not charged
    extension: bool = False  # opt-in: counts only when the assignment's extensions name it
    owns: tuple[str, ...] = ()  # the book names it grades: their absence is charged here

    def matches(self, spec_id: str) -> bool:
        return any(_matches(p, spec_id) for p in self.match)


@dataclass(frozen=True)
class Rubric:
    """A parsed rubric; ``text`` is the file's content, hashed into ``digest``."""

    requires: frozenset[str] = frozenset()
    covers: frozenset[str] = frozenset(CHAPTER_CAPABILITIES)
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
    objectives: tuple[Objective, ...] = ()
    credit: str = "mastery"
    text: str = ""
    extensions: frozenset[str] = frozenset()  # opt-in objectives graded, by name, or "all"

    def owner(self, objective: Objective | None, output: str) -> Objective | None:
        """The objective a failure belongs to: a book name "not submitted" is charged to the
        objective that owns it (``owns``), never to the one whose spec called it."""
        match = _ABSENT.search(output)
        if match:
            for candidate in self.objectives:
                if match.group(1) in candidate.owns and self.graded(candidate):
                    return candidate
        return objective

    def graded(self, objective: Objective | None) -> bool:
        """Whether an objective counts: not an extension, or one the assignment names."""
        if objective is None or not objective.extension:
            return True
        return "all" in self.extensions or objective.name in self.extensions

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()

    def points_for(self, spec_id: str, section: str) -> float:
        points = self.section_points.get(section, self.default_points)
        for rule in self.rules:
            if rule.points is not None and rule.matches(spec_id):
                points = rule.points
        return points

    def objective_for(self, spec_id: str) -> Objective | None:
        """The objective a spec counts towards (the last matching one), or None."""
        found = None
        for objective in self.objectives:
            if objective.matches(spec_id):
                found = objective
        return found

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

    requires = _capabilities(assignment, "requires", [], source)
    covers = _capabilities(assignment, "covers", list(CHAPTER_CAPABILITIES), source)
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

    credit = points.get("credit", "mastery")
    if credit not in CREDITS:
        raise ValueError(f"rubric {source}: points.credit must be one of {CREDITS}, got {credit!r}")
    sections = points.get("sections", {})
    if not isinstance(sections, Mapping):
        raise ValueError(f"rubric {source}: points.sections must be a table")
    return Rubric(
        requires=frozenset(requires),
        covers=frozenset(covers) | frozenset(requires),
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
        rules=_rules(doc, source),
        objectives=_objectives(doc, source),
        credit=str(credit),
        text=text,
        extensions=_extensions(assignment, source),
    )


def _rules(doc: Mapping[str, Any], source: str) -> tuple[Rule, ...]:
    """The ``[[rule]]`` tables: points and visibility by pattern."""
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
    return tuple(rules)


def _extensions(assignment: Mapping[str, Any], source: str) -> frozenset[str]:
    value = assignment.get("extensions", [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(
            f"rubric {source}: assignment.extensions must be a list of objective names "
            f'(or ["all"]), got {value!r}'
        )
    return frozenset(value)


def _objective_links(
    raw: Mapping[str, Any], name: str, source: str
) -> tuple[tuple[str, ...], bool]:
    """An objective's ``after`` (names of earlier objectives) and ``extension`` flag."""
    after = raw.get("after", [])
    if not isinstance(after, list) or not all(isinstance(a, str) and a for a in after):
        raise ValueError(f"rubric {source}: objective {name!r}: after must be a list of names")
    extension = raw.get("extension", False)
    if not isinstance(extension, bool):
        raise ValueError(f"rubric {source}: objective {name!r}: extension must be true or false")
    owns = raw.get("owns", [])
    if not isinstance(owns, list) or not all(isinstance(o, str) and o for o in owns):
        raise ValueError(f"rubric {source}: objective {name!r}: owns must be a list of names")
    return tuple(after), extension


def _capabilities(table: Mapping[str, Any], key: str, default: list[str], source: str) -> list[str]:
    value = table.get(key, default)
    if not isinstance(value, list) or not all(isinstance(c, str) for c in value):
        raise ValueError(
            f"rubric {source}: assignment.{key} must be a list of strings, got {value!r}"
        )
    unknown = sorted(set(value) - set(CAPABILITIES))
    if unknown:
        raise ValueError(
            f"rubric {source}: assignment.{key} names unknown capabilities {unknown}; "
            f"known: {sorted(CAPABILITIES)}"
        )
    return value


def _objectives(doc: Mapping[str, Any], source: str) -> tuple[Objective, ...]:
    raw_objectives = doc.get("objective", [])
    if not isinstance(raw_objectives, list):
        raise ValueError(f"rubric {source}: objective must be an array of tables ([[objective]])")
    objectives: list[Objective] = []
    for n, raw in enumerate(raw_objectives, 1):
        if not isinstance(raw, Mapping):
            raise ValueError(f"rubric {source}: objective {n} must be a table")
        _check_keys(raw, "objective", source)
        name = raw.get("name")
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"rubric {source}: objective {n} needs a non-empty 'name'")
        if name in {o.name for o in objectives}:
            raise ValueError(f"rubric {source}: objective {n}: the name {name!r} is taken")
        match = raw.get("match")
        if isinstance(match, str):
            match = [match]
        if (
            not isinstance(match, list)
            or not match
            or not all(isinstance(m, str) and m for m in match)
        ):
            raise ValueError(
                f"rubric {source}: objective {name!r} needs 'match', a non-empty list of "
                f"patterns, got {match!r}"
            )
        if "points" not in raw:
            raise ValueError(f"rubric {source}: objective {name!r} needs 'points'")
        section = raw.get("section")
        if section is not None and not isinstance(section, str):
            raise ValueError(f"rubric {source}: objective {name!r}: section must be a string")
        after, extension = _objective_links(raw, name, source)
        unknown = [a for a in after if a not in {o.name for o in objectives}]
        if unknown:
            raise ValueError(
                f"rubric {source}: objective {name!r}: after names {unknown}, which are not "
                "objectives defined above it"
            )
        objectives.append(
            Objective(
                name=name,
                points=_points(raw["points"], f"objective {name!r} points", source),
                match=tuple(match),
                section=section,
                visibility=None
                if "visibility" not in raw
                else _visibility(raw["visibility"], f"objective {name!r} visibility", source),
                after=after,
                extension=extension,
                owns=tuple(raw.get("owns", [])),
            )
        )
    return tuple(objectives)


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
    """One entry as a course grades it: points earned out of points possible.

    ``kind`` is "spec" or "objective"; a spec inside an objective is worth 0 of 0 itself
    (its objective's entry holds the points) and names that objective in ``objective``.
    """

    id: str
    section: str
    number: str
    score: float
    max_score: float
    passed: bool
    output: str
    visibility: str
    kind: str = "spec"
    objective: str | None = None


def _capability_of(message: str) -> str:
    # the plugin's reason reads "not claimed: <capability>"
    return message.rpartition(":")[2].strip()


@dataclass
class _Row:
    id: str
    section: str
    outcome: str
    message: str
    requires: set[str]


def _rows(report: Mapping[str, Any]) -> list[_Row]:
    not_run = set(report.get("not_run") or [])
    rows: list[_Row] = []
    seen: set[str] = set()
    for spec in report.get("specs", []):
        spec_id = str(spec["id"])
        seen.add(spec_id)
        outcome = spec.get("outcome")
        if spec_id in not_run or outcome is None:
            outcome = "not run"
        message = spec.get("message") or ""
        requires = {str(c) for c in spec.get("requires") or []}
        if outcome == "not claimed":
            requires.add(_capability_of(message))
        rows.append(
            _Row(spec_id, str(spec.get("section", "other")), str(outcome), message, requires)
        )
    for spec_id in sorted(not_run - seen):
        rows.append(_Row(spec_id, _section_from_id(spec_id), "not run", "", set()))
    return rows


def _judge(row: _Row, reason: str) -> tuple[bool, str] | None:
    """(passed, output) for a spec in the assignment; None if it is not scored (skipped)."""
    if row.outcome == "not claimed":
        cap = _capability_of(row.message)
        return False, (
            f"The assignment covers the capability {cap!r}, which the submission does not "
            "claim (add it to ADAPTER.capabilities and implement its verbs)."
        )
    if row.outcome == "skipped":
        if row.message.startswith("expectation file"):
            return False, (
                f"Skipped by the submission's own expectations file ({row.message}); "
                "counted as failed."
            )
        return None
    if row.outcome in ("passed", "xpassed"):
        return True, ""
    if row.outcome == "not run":
        return False, f"Not run: the grade is incomplete ({reason})."
    if row.outcome == "xfailed":
        return False, f"Marked as expected to fail by the submission: {row.message}"
    return False, row.message or row.outcome


def score_report(report: Mapping[str, Any], rubric: Rubric) -> tuple[list[ScoredSpec], list[str]]:
    """Score a grader report with ``rubric``; returns (scored entries, notes for the reader).

    A spec is in the assignment when every capability it needs is covered
    (``rubric.covers``); the others are left out, claimed or not. In the assignment:

    - passed (or a non-strict xpass): passed;
    - failed, crashed, not run (an incomplete grade), xfailed, skipped by the submission's
      own expectations file, or not claimed: failed;
    - skipped on the grader for another reason (e.g. MNIST files missing): left out, noted.

    A spec outside every objective scores its own points (``points_for``). An objective
    scores its points when all its specs in the assignment passed ("mastery"), or its points
    times the fraction passed ("partial"); one with no spec in the assignment is left out.
    Objective entries come first, then the specs in report order.
    """
    notes: list[str] = []
    reason = report.get("incomplete_reason") or "the grade did not finish"
    moved: dict[str, list[str]] = {}
    scored, members, outside, skipped_env = _score_rows(report, rubric, reason, moved)
    heads = _one_charge(
        rubric,
        [
            _objective_entry(rubric, k, objective, members[objective.name])
            if objective.name in members
            else _not_graded_entry(rubric, k, objective, moved[objective.name])
            for k, objective in enumerate(rubric.objectives, 1)
            if objective.name in members or objective.name in moved
        ],
        members,
    )
    if skipped_env:
        notes.append(
            f"{len(skipped_env)} spec(s) skipped on the grader and not scored: "
            + "; ".join(skipped_env)
        )
    if outside and rubric.objectives:
        notes.append(
            "Not part of this assignment (not scored): the specs of "
            + ", ".join(sorted(outside))
            + "."
        )
    return heads + scored, notes


def _score_rows(
    report: Mapping[str, Any], rubric: Rubric, reason: str, moved: dict[str, list[str]]
) -> tuple[list[ScoredSpec], dict[str, list[ScoredSpec]], set[str], list[str]]:
    """(every spec's entry, the entries by objective, what lies outside the assignment,
    the specs skipped on the grader) for ``score_report``; ``moved`` gets, by objective, the
    owners its failed specs were charged to instead (a book name not submitted)."""
    skipped_env: list[str] = []
    outside: set[str] = set()
    counters: dict[str, int] = {}
    scored: list[ScoredSpec] = []
    members: dict[str, list[ScoredSpec]] = {}
    for row in _rows(report):
        if not row.requires <= rubric.covers:
            outside.update(row.requires - rubric.covers)
            continue
        judged = _judge(row, reason)
        if judged is None:
            skipped_env.append(f"{row.id} ({row.message})")
            continue
        passed, output = judged
        objective = rubric.objective_for(row.id)
        if not passed:
            home, objective = objective, rubric.owner(objective, output)
            if home is not None and objective is not home and rubric.graded(home):
                piece = _ABSENT.search(output)
                name = objective.name if objective else "no objective"
                what = f"{piece.group(1) if piece else 'a piece'}, charged to {name!r}"
                moved.setdefault(home.name, []).append(what)
        if not rubric.graded(objective):  # an extension this assignment does not grade
            outside.add(f"the opt-in objective {objective.name!r}" if objective else row.id)
            continue
        points = 0.0 if objective else rubric.points_for(row.id, row.section)
        counters[row.section] = counters.get(row.section, 0) + 1
        number = row.section if _NUMERIC.match(row.section) else "0"
        entry = ScoredSpec(
            id=row.id,
            section=row.section,
            number=f"{number}.{counters[row.section]}",
            score=points if passed else 0.0,
            max_score=points,
            passed=passed,
            output=output,
            visibility=rubric.visibility_for(row.id),
            objective=objective.name if objective else None,
        )
        scored.append(entry)
        if objective:
            members.setdefault(objective.name, []).append(entry)
    return scored, members, outside, skipped_env


def _prerequisites(rubric: Rubric, name: str) -> set[str]:
    """Every objective ``name`` comes after, directly or through another."""
    by_name = {o.name: o for o in rubric.objectives}
    seen: set[str] = set()
    todo = list(by_name[name].after) if name in by_name else []
    while todo:
        n = todo.pop()
        if n not in seen and n in by_name:
            seen.add(n)
            todo += by_name[n].after
    return seen


def _absent(spec: ScoredSpec) -> bool:
    """A spec that failed on its objective's own fault whatever came before: the code it
    calls was not submitted (a missing verb, a book name not defined) or does not take the
    book's arguments (a TypeError about arguments): that objective's own charge, always."""
    text = spec.output.split("\n", 1)[0]
    signature = "raised TypeError" in text and "argument" in text
    return not spec.passed and ("not submitted" in text or "lacks the verb" in text or signature)


def _one_charge(
    rubric: Rubric, heads: list[ScoredSpec], members: dict[str, list[ScoredSpec]]
) -> list[ScoredSpec]:
    """Under mastery, an objective that failed while one of its prerequisites failed on
    submitted code is given back points (one bug, one charge), provided some of its own
    specs passed and none failed as not submitted: a stub, or a piece left unwritten, still
    scores 0 for its own objective. What is given back is bounded by what the failed
    prerequisites cost, shared by everything they explain, so breaking a correct
    prerequisite on purpose never raises a grade."""
    if rubric.credit != "mastery":
        return heads
    # a prerequisite whose code is absent ("not submitted") explains no failure downstream
    budget = {
        str(h.objective): h.max_score
        for h in heads
        if any(not s.passed and not _absent(s) for s in members.get(str(h.objective), []))
    }
    out = []
    for head in heads:
        name = str(head.objective)
        causes = sorted(_prerequisites(rubric, name) & budget.keys())
        specs = members.get(name, [])
        own_code = any(s.passed for s in specs) and not any(_absent(s) for s in specs)
        credit = _draw(budget, causes, head.max_score) if own_code and not head.passed else 0
        if not credit:
            out.append(head)
            continue
        note = (
            f" Charged once: its prerequisite {causes[0]!r} failed too, so {credit:g} of its "
            f"{head.max_score:g} points are given back (at most what the prerequisite cost; "
            "fix that objective first: these specs may pass then)."
        )
        out.append(replace(head, score=credit, output=head.output + note))
    return out


def _draw(budget: dict[str, float], causes: list[str], wanted: float) -> float:
    """Take up to ``wanted`` points from the causes' budgets, in order; what is taken is
    spent (one prerequisite's points are given back once, however much it explains)."""
    taken = 0.0
    for cause in causes:
        share = min(budget[cause], wanted - taken)
        budget[cause] -= share
        taken += share
    return taken


def _objective_entry(
    rubric: Rubric, k: int, objective: Objective, specs: list[ScoredSpec]
) -> ScoredSpec:
    passed = [s for s in specs if s.passed]
    failed = [s for s in specs if not s.passed]
    if rubric.credit == "partial":
        score = objective.points * len(passed) / len(specs)
    else:
        score = objective.points if not failed else 0.0
    if not failed:
        output = f"All {len(specs)} specs passed."
    else:
        shown = [s.id.rpartition("::")[2] for s in failed if s.visibility == "visible"]
        hidden = len(failed) - len(shown)
        listed = ", ".join(shown) + (f" and {hidden} hidden spec(s)" if hidden else "")
        rule = (
            f"partial credit: {len(passed)} of {len(specs)} specs passed"
            if rubric.credit == "partial"
            else "mastery: the points count when every spec passes"
        )
        output = (
            f"{len(failed)} of {len(specs)} specs failed ({rule}): {listed or 'hidden'}. "
            "See each spec's entry for why."
        )
    return ScoredSpec(
        id=f"objective::{objective.name}",
        section=objective.section or specs[0].section,
        number=f"0.{k}",
        score=score,
        max_score=objective.points,
        passed=not failed,
        output=output,
        visibility=objective.visibility or rubric.default_visibility,
        kind="objective",
        objective=objective.name,
    )


def _not_graded_entry(
    rubric: Rubric, k: int, objective: Objective, owners: list[str]
) -> ScoredSpec:
    """An objective every spec of which failed on a book piece not submitted (charged to the
    piece's own objective): listed at 0, never left out of the total, with the reason; its
    code cannot be judged without that piece, and unjudged code earns nothing."""
    names = "; ".join(sorted({o for o in owners if o})) or "another objective"
    return ScoredSpec(
        id=f"objective::{objective.name}",
        section=objective.section or "other",
        number=f"0.{k}",
        score=0.0,
        max_score=objective.points,
        passed=False,
        output=(
            f"not graded: its {len(owners)} spec(s) need what the submission does not define "
            f"(not submitted: {names}); once it is submitted, these specs are graded."
        ),
        visibility=objective.visibility or rubric.default_visibility,
        kind="objective",
        objective=objective.name,
    )


def _section_from_id(spec_id: str) -> str:
    # specs/test_s2_3_tensor_operations.py::... -> 2.3
    stem = spec_id.split("::")[0].rpartition("/")[2]
    parts = stem.split("_")
    if len(parts) > 3 and parts[0] == "test" and parts[1].startswith("s"):
        return f"{parts[1][1:]}.{parts[2]}"
    return "other"
