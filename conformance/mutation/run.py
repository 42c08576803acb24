"""Measure the conformance suite's power with mutmut (issue 12, item 4; conformance/MUTATION.md).

``python -m conformance.mutation.run --target numpy`` mutates the NumPy reference
(conformance/reference) and grades every mutant with ``pytest conformance/specs --impl numpy``;
``--target torch-cpu`` mutates the port's chapter modules (dl_ch2/*.py, the functions the torch
adapter reaches) and grades them with ``--impl torch-cpu``. Each target's mutmut configuration is
``conformance/mutation/<target>.cfg``; it is copied as ``setup.cfg`` into a scratch copy of the
repository (``build/mutation/<target>/``) where mutmut runs, so the work tree is never touched.

After the run every mutant is classified:

- ``killed`` / ``timeout``: the suite caught it;
- ``out of scope``: the mutant only changed the text of an error message (the argument of a
  ``raise``) or of a log line (a call to ``print``/``emit``/``log``/``warn``); issue 12 puts these
  out of scope: the suite checks that bad input raises, not how the message is worded;
- ``equivalent``: a survivor listed in ``conformance/mutation/survivors.json`` with the reason
  it cannot change any observable behaviour;
- ``open``: a survivor listed there as a known gap (with the spec or verb it needs), or not
  listed at all (``unclassified``: the run fails until someone classifies it);
- ``option not reached``: a survivor listed in survivors.json whose changed code runs only
  under an argument that no verb of the protocol passes (the branch-level "not reached");
- ``not reached``: no spec calls the function (mutmut's "no tests").

The score is (killed + timeout) / (killed + timeout + every other in-scope mutant that is not
equivalent), over the functions some spec reaches; ``score_counting_not_reached`` also counts
the mutants of unreached functions and options as missed. The command exits 1 when a survivor is
unclassified or the score is below ``--target-score`` (95 by default), 0 otherwise.
"""

from __future__ import annotations

import argparse
import ast
import copy
import difflib
import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from conformance.atomic import atomic_write

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
TARGETS = ("numpy", "torch-cpu")
SURVIVORS_FILE = HERE / "survivors.json"
#: Calls whose arguments are log text, never behaviour (issue 12: logging is out of scope).
LOG_CALLS = {"print", "emit", "log", "warn", "info", "debug", "warning", "write"}
#: Helpers whose argument at this position is an argument's name, used only in the text of
#: the error they raise (so a mutant of that argument is message text, out of scope).
MESSAGE_NAME_ARGS = {
    "require_array": 0,
    "require_tensor": 0,
    "require_rank": 0,
    "require_positive_int": 0,
    "require_float_dtype": 0,
    "_matrix_vector": 2,
    "_check_matrix_vector": 2,
    "_check": 2,
    "require_learning_rate": 1,
    "require_images": 2,
    "require_labels": 2,
}
#: Of those, the helpers whose name argument has a default (also message text): leaving the
#: argument out is then a message change too.
MESSAGE_NAME_DEFAULTS = {"require_learning_rate", "require_images", "require_labels"}
MUTMUT_VERSION = "3.8.1"
#: Classes that do not count against the score. "option not reached": the mutant changes code
#: that runs only under an argument no verb of the protocol passes (fit's compile=True, a
#: callback, ...), the branch-level twin of "not reached"; score_counting_not_reached counts
#: both as missed.
NOT_MISSED = {
    "killed",
    "timeout",
    "out of scope",
    "equivalent",
    "not reached",
    "option not reached",
}


# -- preparing and running ------------------------------------------------------------------
def prepare(target: str, workdir: Path) -> Path:
    """A scratch copy of the repository for ``target``, with its mutmut config as setup.cfg.

    Files are copied with their modification times, so mutmut regenerates the mutants of a
    file only when it changed since the last run and keeps the verdicts of the others.
    """
    scratch = workdir / target
    scratch.mkdir(parents=True, exist_ok=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".hypothesis", "mutants")
    for name in ("conformance", "dl_ch2"):
        shutil.copytree(ROOT / name, scratch / name, dirs_exist_ok=True, ignore=ignore)
    shutil.copy2(ROOT / "pyproject.toml", scratch / "pyproject.toml")
    cfg = (HERE / f"{target}.cfg").read_bytes()
    if not (scratch / "setup.cfg").exists() or (scratch / "setup.cfg").read_bytes() != cfg:
        atomic_write(scratch / "setup.cfg", cfg)
    return scratch


def forget_misses(scratch: Path, names: list[str]) -> int:
    """Clear mutmut's cached verdicts of survivors and unreached mutants (exit codes 0, 5, 33).

    mutmut re-runs a mutant only when its function changed; after new specs are added, this
    makes it run every mutant the old suite missed again (killed ones keep their verdict); with
    ``names`` (globs), only the misses among those mutants.
    """
    cleared = 0
    for meta in (scratch / "mutants").rglob("*.py.meta"):
        data = json.loads(meta.read_text())
        codes = data.get("exit_code_by_key", {})
        for name, code in codes.items():
            if names and not any(fnmatch.fnmatchcase(name, n) for n in names):
                continue
            if code in (0, 5, 33):
                codes[name] = None
                cleared += 1
        atomic_write(meta, json.dumps(data, indent=4).encode())
    return cleared


def run_mutmut(scratch: Path, max_children: int, names: list[str]) -> int:
    env = dict(os.environ)
    env["DL_CH2_HYPOTHESIS_PROFILE"] = "conformance-ci"
    env.pop("PYTHONPATH", None)  # the mutated copy under mutants/ must be the one imported
    cmd = [sys.executable, "-m", "mutmut", "run", "--max-children", str(max_children), *names]
    print("+", " ".join(cmd), f"(in {scratch})", flush=True)
    with open(scratch / "mutmut-run.log", "wb") as log:
        return subprocess.call(cmd, cwd=scratch, env=env, stdout=log, stderr=subprocess.STDOUT)


# -- classifying ----------------------------------------------------------------------------
def _functions(tree: ast.AST) -> dict[str, ast.FunctionDef | ast.AsyncFunctionDef]:
    return {
        n.name: n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
    }


def _call_name(node: ast.Call) -> str:
    f = node.func
    return f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""


class _Normalise(ast.NodeTransformer):
    """Blank out what is out of scope: messages of raised exceptions, names passed to the
    argument checks only for their messages, and log calls' text."""

    def visit_Raise(self, node: ast.Raise) -> ast.AST:
        if isinstance(node.exc, ast.Call):  # keep the exception type, drop its message
            node.exc = ast.Call(func=node.exc.func, args=[], keywords=[])
        return node

    def visit_Call(self, node: ast.Call) -> ast.AST:
        name = _call_name(node)
        if name in LOG_CALLS:
            return ast.Call(func=node.func, args=[], keywords=[])
        at = MESSAGE_NAME_ARGS.get(name)
        if at is not None and len(node.args) > at:
            node.args[at] = ast.Constant(value="<name>")  # whatever names the argument
        elif at is not None and len(node.args) == at and name in MESSAGE_NAME_DEFAULTS:
            node.args.append(ast.Constant(value="<name>"))
        self.generic_visit(node)
        return node


def _canonical(fn: ast.AST) -> str:
    node = _Normalise().visit(copy.deepcopy(fn))
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        node.name = "f"
        body = node.body
        if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
            node.body = body[1:] or [ast.Pass()]
    return ast.dump(node, annotate_fields=False)


def _status(code: int | None) -> str:
    """mutmut 3.8's reading of a mutant's exit code (mutmut/stats.py: status_by_exit_code)."""
    table = {
        1: "killed",
        3: "killed",
        0: "survived",
        5: "no tests",
        33: "no tests",
        34: "skipped",
        35: "suspicious",
        36: "timeout",
        37: "caught by type check",
        24: "timeout",
        -24: "timeout",
        152: "timeout",
        255: "timeout",
        -11: "segfault",
        -9: "segfault",
        2: "interrupted",
        None: "not checked",
    }
    return table.get(code, "suspicious")


def _diff(orig: ast.AST, mutant: ast.AST, name: str) -> str:
    short = name.rsplit(".", 1)[-1]
    a = ast.unparse(orig).replace(short.rsplit("__mutmut_", 1)[0] + "__mutmut_orig", "f", 1)
    b = ast.unparse(mutant).replace(short, "f", 1)
    return "\n".join(
        difflib.unified_diff(a.splitlines(), b.splitlines(), "original", name, n=1, lineterm="")
    )


def collect(scratch: Path) -> list[dict[str, Any]]:
    """Every mutant of the last run: name, file, status; survivors with diff and scope."""
    out: list[dict[str, Any]] = []
    for meta in sorted((scratch / "mutants").rglob("*.py.meta")):
        codes = json.loads(meta.read_text())["exit_code_by_key"]
        if not codes:
            continue
        mutated = meta.with_suffix("")
        source = mutated.read_text()
        funcs = _functions(ast.parse(source))
        rel = str(mutated.relative_to(scratch / "mutants"))
        for name, code in sorted(codes.items()):
            row: dict[str, Any] = {"name": name, "file": rel, "status": _status(code)}
            if row["status"] not in ("killed", "timeout"):
                short = name.rsplit(".", 1)[-1]
                orig = funcs.get(short.rsplit("__mutmut_", 1)[0] + "__mutmut_orig")
                mut = funcs.get(short)
                if orig is None or mut is None:
                    row.update(out_of_scope=False, diff="(mutant not found in the mutated file)")
                else:
                    row.update(out_of_scope=_canonical(orig) == _canonical(mut))
                    row["diff"] = _diff(orig, mut, name)
            out.append(row)
    return out


def match_rule(row: dict[str, Any], rules: list[dict[str, str]]) -> dict[str, str] | None:
    """The first rule of survivors.json whose name glob and diff regex match the survivor.

    The regex is searched in the mutant's changed lines only (those starting with - or +).
    """
    changed = "\n".join(line for line in row.get("diff", "").splitlines()[2:] if line[:1] in "+-")
    for rule in rules:
        if fnmatch.fnmatchcase(row["name"], rule["match"]) and re.search(
            rule.get("diff", ""), changed, re.MULTILINE
        ):
            return rule
    return None


def classify(rows: list[dict[str, Any]], known: list[dict[str, str]]) -> dict[str, Any]:
    counts: Counter[str] = Counter()
    mutmut_counts: Counter[str] = Counter(r["status"] for r in rows)
    survivors: list[dict[str, Any]] = []
    for r in rows:
        status = r["status"]
        if status in ("killed", "timeout"):
            cls = status
        elif r.get("out_of_scope"):
            cls = "out of scope"
        elif status == "no tests":
            cls = "not reached"
        else:
            entry = match_rule(r, known)
            cls = entry["class"] if entry else "unclassified"
            r["why"] = entry["why"] if entry else ""
            r["rule"] = known.index(entry) if entry else None
            survivors.append(r)
        r["class"] = cls
        counts[cls] += 1
    caught = counts["killed"] + counts["timeout"]
    missed = sum(n for c, n in counts.items() if c not in NOT_MISSED)
    denominator = caught + missed
    reached_or_not = denominator + counts["not reached"] + counts["option not reached"]
    return {
        "mutmut_counts": dict(mutmut_counts),
        "classes": dict(counts),
        "score": 100.0 * caught / denominator if denominator else 0.0,
        "caught": caught,
        "non_equivalent_in_scope": denominator,
        "score_counting_not_reached": 100.0 * caught / reached_or_not if reached_or_not else 0.0,
        "survivors": survivors,
        "by_rule": [
            {**rule, "mutants": [r["name"] for r in survivors if r.get("rule") == i]}
            for i, rule in enumerate(known)
        ],
        "not_reached": sorted(
            {r["name"].rsplit("__mutmut_", 1)[0] for r in rows if r["class"] == "not reached"}
        ),
    }


def stale_rules(summary: dict[str, Any]) -> list[int]:
    """Indices of the rules of survivors.json that matched no survivor of this run."""
    return [i for i, rule in enumerate(summary["by_rule"]) if not rule["mutants"]]


def _cell(text: str) -> str:
    return text.replace("|", "&#124;")


def tables(summary: dict[str, Any]) -> str:
    """The counts and the survivor rules as Markdown tables, for conformance/MUTATION.md."""
    lines = ["| mutmut status | count |", "| --- | --- |"]
    lines += [f"| {k} | {v} |" for k, v in sorted(summary["mutmut_counts"].items())]
    lines += [f"| **total** | **{summary['mutants']}** |", ""]
    lines += ["| class | count |", "| --- | --- |"]
    order = [
        "killed",
        "timeout",
        "out of scope",
        "equivalent",
        "open",
        "option not reached",
        "not reached",
    ]
    classes = dict(summary["classes"])
    lines += [f"| {c} | {classes.pop(c, 0)} |" for c in order]
    lines += [f"| {c} | {n} |" for c, n in sorted(classes.items())]
    lines += [
        "",
        f"**Score: {summary['caught']} / {summary['non_equivalent_in_scope']} = "
        f"{summary['score']:.1f}%** ({summary['score_counting_not_reached']:.1f}% counting the "
        "unreached functions and options as missed)",
        "",
        "Every survivor, by the first rule of `conformance/mutation/survivors.json` it matches:",
        "",
        "| # | class | mutants | where (name glob; changed-line regex) | why |",
        "|---|---|---|---|---|",
    ]
    for i, rule in enumerate(summary["by_rule"]):
        where = f"`{rule['match']}`" + (f"; `{rule['diff']}`" if rule.get("diff") else "")
        lines.append(
            f"| {i} | {rule['class']} | {len(rule['mutants'])} | {_cell(where)} | "
            f"{_cell(rule['why'])} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m conformance.mutation.run", description=__doc__)
    p.add_argument("--target", choices=TARGETS, required=True)
    p.add_argument("--workdir", type=Path, default=ROOT / "build" / "mutation")
    p.add_argument("--max-children", type=int, default=2)
    p.add_argument("--target-score", type=float, default=95.0)
    p.add_argument("--no-run", action="store_true", help="only classify the last run's results")
    p.add_argument(
        "--rerun-misses",
        action="store_true",
        help="run the survivors and unreached mutants of the last run again (after new specs)",
    )
    p.add_argument("names", nargs="*", help="mutant name globs, passed to `mutmut run`")
    args = p.parse_args(argv)
    scratch = prepare(args.target, args.workdir.resolve())
    t0 = time.monotonic()
    if args.rerun_misses:
        print(f"cleared {forget_misses(scratch, args.names)} cached misses", flush=True)
    if not args.no_run:
        rc = run_mutmut(scratch, args.max_children, args.names)
        if rc != 0:
            print(f"mutmut run exited {rc}; see {scratch / 'mutmut-run.log'}", file=sys.stderr)
            return 1
    elapsed = time.monotonic() - t0
    known = json.loads(SURVIVORS_FILE.read_text()) if SURVIVORS_FILE.exists() else {}
    rows = collect(scratch)
    summary = classify(rows, known.get(args.target, []))
    summary.update(
        target=args.target, mutmut=MUTMUT_VERSION, seconds=round(elapsed, 1), mutants=len(rows)
    )
    atomic_write(scratch / "mutation-summary.json", json.dumps(summary, indent=2).encode())
    atomic_write(scratch / "mutation-all.json", json.dumps(rows, indent=1).encode())
    atomic_write(scratch / "mutation-tables.md", tables(summary).encode())
    brief = {k: v for k, v in summary.items() if k not in ("survivors", "by_rule")}
    print(json.dumps(brief, indent=2))
    bad = [s for s in summary["survivors"] if s["class"] == "unclassified"]
    for s in bad:
        print(f"\nUNCLASSIFIED {s['name']}\n{s['diff']}")
    for i in stale_rules(summary):
        rule = summary["by_rule"][i]
        print(f"STALE RULE {i} (matches no survivor): {rule['match']} {rule.get('diff', '')}")
    caught, total = summary["caught"], summary["non_equivalent_in_scope"]
    print(f"\nscore {summary['score']:.1f}% ({caught}/{total})")
    return 1 if bad or summary["score"] < args.target_score else 0


if __name__ == "__main__":
    sys.exit(main())
