"""conformance/mutation/run.py: which mutants are out of scope, rule matching, the score."""

from __future__ import annotations

import ast

from conformance.mutation.run import (
    _canonical,
    _functions,
    classify,
    match_rule,
    stale_rules,
    tables,
)

ORIGINAL = """
def f__mutmut_orig(x, n):
    require_rank("x", x, 2)
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    emit(f"n = {n}")
    return x * n
"""


def _same_after_normalising(mutant_body: str) -> bool:
    funcs = _functions(ast.parse(ORIGINAL + mutant_body))
    return _canonical(funcs["f__mutmut_orig"]) == _canonical(funcs["f__mutmut_1"])


def _mutant(old: str, new: str) -> str:
    assert old in ORIGINAL
    return ORIGINAL.replace("f__mutmut_orig", "f__mutmut_1").replace(old, new)


def test_message_text_name_argument_and_log_text_are_out_of_scope() -> None:
    assert _same_after_normalising(_mutant('f"n must be >= 1, got {n}"', '"XXn must beXX"'))
    assert _same_after_normalising(
        _mutant('ValueError(f"n must be >= 1, got {n}")', "ValueError()")
    )
    assert _same_after_normalising(_mutant('require_rank("x", x, 2)', "require_rank(None, x, 2)"))
    assert _same_after_normalising(_mutant('emit(f"n = {n}")', 'emit("XXn = XX")'))
    assert _same_after_normalising(_mutant('require_rank("x", x, 2)', "require_rank(name, x, 2)"))


def test_a_defaulted_name_argument_left_out_is_out_of_scope() -> None:
    original = 'def f__mutmut_orig(y, x):\n    require_labels(y, x, "evaluate")\n    return x\n'
    for call in ("require_labels(y, x)", "require_labels(y, x, None)"):
        mutant = original.replace("f__mutmut_orig", "f__mutmut_1").replace(
            'require_labels(y, x, "evaluate")', call
        )
        funcs = _functions(ast.parse(original + mutant))
        assert _canonical(funcs["f__mutmut_orig"]) == _canonical(funcs["f__mutmut_1"])
    # dropping another argument is a behaviour change
    mutant = original.replace("f__mutmut_orig", "f__mutmut_1").replace(
        'require_labels(y, x, "evaluate")', 'require_labels(y, "evaluate")'
    )
    funcs = _functions(ast.parse(original + mutant))
    assert _canonical(funcs["f__mutmut_orig"]) != _canonical(funcs["f__mutmut_1"])


def test_behaviour_changes_are_in_scope() -> None:
    assert not _same_after_normalising(_mutant("if n < 1:", "if n <= 1:"))
    assert not _same_after_normalising(_mutant("return x * n", "return x / n"))
    assert not _same_after_normalising(
        _mutant('require_rank("x", x, 2)', 'require_rank("x", x, 3)')
    )
    assert not _same_after_normalising(_mutant("raise ValueError(", "raise TypeError("))


def _row(name: str, status: str, diff: str = "") -> dict[str, object]:
    return {"name": name, "status": status, "diff": diff, "out_of_scope": False}


def test_rules_match_by_name_glob_and_changed_line_regex() -> None:
    diff = "--- original\n+++ m\n@@ -1 +1 @@\n-    if n < 1:\n+    if n <= 1:\n     return x"
    rules = [
        {"match": "pkg.mod.x_g__*", "class": "open", "why": "other function"},
        {"match": "pkg.mod.x_f__*", "diff": r"return", "class": "open", "why": "context only"},
        {"match": "pkg.mod.x_f__*", "diff": r"n <= 1", "class": "equivalent", "why": "yes"},
    ]
    rule = match_rule(_row("pkg.mod.x_f__mutmut_3", "survived", diff), rules)
    assert rule is not None and rule["why"] == "yes"


def test_score_counts_open_and_unclassified_as_missed_and_skips_equivalent() -> None:
    rows = [_row(f"m.x_f__mutmut_{i}", "killed") for i in range(8)]
    rows += [_row("m.x_f__mutmut_8", "survived", "-a\n+b"), _row("m.x_f__mutmut_9", "survived")]
    rows += [_row("m.x_g__mutmut_1", "no tests"), _row("m.x_f__mutmut_10", "survived", "-c\n+d")]
    rules = [
        {"match": "m.x_f__mutmut_8", "class": "equivalent", "why": "same"},
        {"match": "m.x_f__mutmut_10", "class": "option not reached", "why": "a callback"},
    ]
    summary = classify(rows, rules)
    assert summary["classes"]["unclassified"] == 1
    assert summary["classes"]["not reached"] == 1
    assert summary["classes"]["option not reached"] == 1
    assert summary["caught"] == 8 and summary["non_equivalent_in_scope"] == 9
    assert abs(summary["score"] - 800 / 9) < 1e-9
    # counting what no verb reaches (the function, the option) as missed: 8 of 11
    assert abs(summary["score_counting_not_reached"] - 800 / 11) < 1e-9


def test_stale_rules_and_tables() -> None:
    rows = [
        _row("m.x_f__mutmut_1", "killed"),
        _row("m.x_f__mutmut_2", "survived", "--- o\n+++ m\n-a\n+b|c"),
    ]
    rules = [
        {"match": "m.x_g__*", "class": "equivalent", "why": "matches nothing"},
        {"match": "m.x_f__*", "diff": "b[|]c", "class": "open", "why": "needs a | spec"},
    ]
    summary = classify(rows, rules)
    summary["mutants"] = len(rows)
    assert stale_rules(summary) == [0]
    md = tables(summary)
    assert "| **total** | **2** |" in md
    assert "**Score: 1 / 2 = 50.0%**" in md
    # a | inside a cell is escaped, so the table keeps its five columns
    assert "| 1 | open | 1 | `m.x_f__*`; `b[&#124;]c` | needs a &#124; spec |" in md
