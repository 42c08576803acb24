"""The companion notebook: ``notebooks/chapter02.ipynb``, built from ``notebooks/chapter02.py``.

The source is one Python file in cells (``# %%`` lines, as jupytext's percent format):

- ``# %% [markdown]``: a markdown cell, each line commented (``# ``);
- ``# %% book N``: the port of the 2nd-edition notebook's code cell N (1 to 71, in order);
  after it, in this order and each optional:
- ``# %% quick``: the cell's source in the shortened run (the test's), for long cells;
- ``# %% printed``: what the book printed for that cell, verbatim and commented (none: it
  printed nothing);
- ``# %% differs``: where the port's output differs from the book's, and why;
- ``# %% check``/``# %% check full``: how the output is compared with the book's (``full``:
  only at full size). ``exact`` (the default): the same text, whitespace aside; ``none``;
  ``numbers TOL``: the same numbers, each within TOL; otherwise template lines, literal
  text with ``{VALUE~TOL}`` for a number within TOL of VALUE and ``{*}`` for any text.

``build`` writes the notebook: each book cell is a code cell followed by a markdown cell
giving what the book printed and the ``differs`` line. ``execute`` runs it (nbclient),
``compare`` checks each cell's printed text against the book's, and ``starter_notebook``
blanks the code cells (the course starter). ``python -m dl_ch2_tools.notebook`` builds,
checks the sync, runs, or writes the starter.
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "BookCell",
    "CellCheck",
    "build_notebook",
    "compare",
    "execute",
    "main",
    "parse_source",
    "printed_text",
    "starter_notebook",
]

#: Paths from the repository's root (the command runs there, as ``nox -s notebook`` does).
SOURCE = Path("notebooks/chapter02.py")
NOTEBOOK = Path("notebooks/chapter02.ipynb")
EXECUTED = Path("runs/notebook/chapter02.ipynb")
#: The 2nd-edition notebook's code cells (chapter02_mathematical-building-blocks.ipynb).
BOOK_CELLS = 71
_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_NUMBER_TOKEN = re.compile(rf"(?<![\w.]){_NUMBER}(?![\w])")
#: Slack for the binary rounding of printed decimals: 1.75 - 1.72 is within 0.03.
_SLACK = 1e-9


@dataclass
class BookCell:
    """One cell of the source: markdown, or the port of book cell ``number``."""

    kind: str  # "markdown" or "code"
    source: str
    number: int | None = None
    quick: str | None = None
    printed: str = ""
    differs: str = ""
    check: str = "exact"
    full_only: bool = False


@dataclass
class CellCheck:
    """The comparison of one cell's printed text with the book's."""

    number: int
    status: str  # "match", "differs", "skipped" (quick run, full-only) or "unchecked"
    got: str
    expected: str
    detail: str = ""
    values: list[tuple[float, float, float]] = field(default_factory=list)


def _uncomment(lines: list[str]) -> str:
    """The text of a commented block; blank lines around it are the cells' separators."""
    text = "\n".join(lines).strip("\n")
    out = []
    for line in text.splitlines() if text else []:
        if line.startswith("# "):
            out.append(line[2:])
        elif line.strip() == "#":
            out.append("")
        else:
            raise ValueError(f"expected a commented line ('# ...'), got {line!r}")
    return "\n".join(out).strip("\n")


def parse_source(text: str) -> list[BookCell]:
    """The cells of a percent-format source (see the module's docstring)."""
    cells: list[BookCell] = []
    header, body = "", []
    for line in [*text.splitlines(), "# %% end"]:
        if not line.startswith("# %%"):
            body.append(line)
            continue
        if header:
            _add_part(cells, header, body)
        header, body = line[4:].strip(), []
    return cells


def _add_part(cells: list[BookCell], header: str, body: list[str]) -> None:
    code = "\n".join(body).strip("\n")
    if header == "[markdown]":
        cells.append(BookCell("markdown", _uncomment(body)))
        return
    if header.startswith("book "):
        number = int(header.split()[1])
        expected = sum(c.kind == "code" for c in cells) + 1
        if number != expected:
            raise ValueError(f"book cell {number} out of order: expected {expected}")
        cells.append(BookCell("code", code, number=number))
        return
    if not cells or cells[-1].kind != "code":
        raise ValueError(f"'# %% {header}' must follow a '# %% book N' cell")
    cell = cells[-1]
    if header == "quick":
        cell.quick = code
    elif header == "printed":
        cell.printed = _uncomment(body)
    elif header == "differs":
        cell.differs = " ".join(_uncomment(body).split())
    elif header in ("check", "check full"):
        cell.check, cell.full_only = _uncomment(body) or "exact", header == "check full"
    else:
        raise ValueError(f"unknown cell header '# %% {header}'")


def _book_markdown(cell: BookCell) -> str:
    if cell.printed:
        text = f"*The book's cell [{cell.number}] printed:*\n\n```text\n{cell.printed}\n```"
    else:
        text = f"*The book's cell [{cell.number}] printed nothing.*"
    if cell.differs:
        text += f"\n\n**Differs:** {cell.differs}"
    return text


def build_notebook(cells: list[BookCell]) -> Any:
    """The notebook (an ``nbformat`` node): each book cell, then what the book printed."""
    nbformat = _nbformat()
    nb = nbformat.v4.new_notebook()
    nb.metadata = {
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
    }
    for i, cell in enumerate(cells):
        if cell.kind == "markdown":
            nb.cells.append(nbformat.v4.new_markdown_cell(cell.source, id=f"md{i}"))
            continue
        meta = {"book_cell": cell.number, "printed": cell.printed, "check": cell.check}
        if cell.full_only:
            meta["check_full_only"] = True
        if cell.quick is not None:
            meta["quick"] = cell.quick
        code = nbformat.v4.new_code_cell(cell.source, id=f"book{cell.number}")
        code.metadata = {"dl_ch2": meta}
        nb.cells.append(code)
        book = nbformat.v4.new_markdown_cell(_book_markdown(cell), id=f"printed{cell.number}")
        nb.cells.append(book)
    return nb


def dumps(nb: Any) -> str:
    """The notebook's file text, as written (sorted keys, one-space indent, final newline)."""
    return json.dumps(nb, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def starter_notebook(nb: Any) -> Any:
    """The course starter: the same notebook with every code cell blank and no outputs.

    The markdown (what the book printed) and each code cell's ``book_cell`` number stay,
    so a grader can find cells by the book's numbering; the shortened ``quick`` sources
    (code) are dropped.
    """
    out = copy.deepcopy(nb)
    for cell in out.cells:
        if cell.cell_type == "code":
            cell.source = ""
            cell.outputs = []
            cell.execution_count = None
            cell.metadata.get("dl_ch2", {}).pop("quick", None)
    return out


def execute(nb: Any, *, quick: bool, timeout: int = 600, cwd: Path | None = None) -> Any:
    """Run the notebook top to bottom (nbclient); ``quick`` runs the shortened cells."""
    from nbclient import NotebookClient

    run = copy.deepcopy(nb)
    if quick:
        for cell in run.cells:
            quick_source = cell.metadata.get("dl_ch2", {}).get("quick")
            if cell.cell_type == "code" and quick_source is not None:
                cell.source = quick_source
    client = NotebookClient(
        run,
        timeout=timeout,
        kernel_name="python3",
        resources={"metadata": {"path": str(cwd or Path.cwd())}},
    )
    client.execute()
    return run


def printed_text(cell: Any) -> str:
    """What a code cell printed: its stdout and the text of its result, in order."""
    parts = []
    for out in cell.get("outputs", []):
        if out.get("output_type") == "stream" and out.get("name") == "stdout":
            parts.append(out.get("text", ""))
        elif out.get("output_type") == "execute_result":
            parts.append(out.get("data", {}).get("text/plain", "") + "\n")
    return "".join(parts).strip("\n")


def compare(nb: Any, *, quick: bool) -> list[CellCheck]:
    """Each book cell's printed text against the book's, by the cell's check."""
    results = []
    for cell in nb.cells:
        meta = cell.get("metadata", {}).get("dl_ch2")
        if cell.cell_type != "code" or meta is None:
            continue
        got, expected = printed_text(cell), meta["printed"]
        rule = meta["check"]
        if quick and meta.get("check_full_only"):
            detail = "compared at full size only"
            results.append(CellCheck(meta["book_cell"], "skipped", got, expected, detail))
            continue
        results.append(check_cell(meta["book_cell"], rule, got, expected))
    return results


def check_cell(number: int, rule: str, got: str, expected: str) -> CellCheck:
    """Apply one check rule (``exact``, ``none``, ``numbers TOL`` or a template)."""
    if rule == "none":
        return CellCheck(number, "unchecked", got, expected, "not compared")
    if rule == "exact":
        ok = got.split() == expected.split()
        return CellCheck(number, "match" if ok else "differs", got, expected, "exact")
    if rule.startswith("numbers "):
        return _check_numbers(number, float(rule.split()[1]), got, expected)
    return _check_template(number, rule, got, expected)


def _check_numbers(number: int, tol: float, got: str, expected: str) -> CellCheck:
    a = [float(v) for v in _NUMBER_TOKEN.findall(got)]
    b = [float(v) for v in _NUMBER_TOKEN.findall(expected)]
    values = [(x, y, tol) for x, y in zip(a, b, strict=False)]
    ok = len(a) == len(b) and all(abs(x - y) <= tol + _SLACK for x, y, _ in values)
    detail = f"numbers within {tol}" + ("" if len(a) == len(b) else f" ({len(a)} vs {len(b)})")
    return CellCheck(number, "match" if ok else "differs", got, expected, detail, values)


def _check_template(number: int, rule: str, got: str, expected: str) -> CellCheck:
    pattern, wanted = template_regex(rule)
    m = re.search(pattern, got, re.DOTALL)
    if m is None:
        return CellCheck(number, "differs", got, expected, f"no match for {rule!r}")
    values = [(float(v), w, tol) for v, (w, tol) in zip(m.groups(), wanted, strict=True)]
    ok = all(abs(x - w) <= tol + _SLACK for x, w, tol in values)
    detail = f"template, {len(values)} values" if values else "template"
    return CellCheck(number, "match" if ok else "differs", got, expected, detail, values)


def template_regex(template: str) -> tuple[str, list[tuple[float, float]]]:
    """A template's regex, and the (value, tolerance) of each ``{VALUE~TOL}`` in it.

    Each line is found in order (anything may come between); within a line, a run of
    spaces matches any whitespace.
    """
    wanted: list[tuple[float, float]] = []
    lines = []
    for line in template.strip().splitlines():
        parts = []
        for piece in re.split(r"(\{[^}]*\})", line.strip()):
            if piece == "{*}":
                parts.append(".*?")
            elif piece.startswith("{") and piece.endswith("}") and "~" in piece:
                value, tol = piece[1:-1].split("~")
                wanted.append((float(value), float(tol)))
                parts.append(rf"(?<![\w.])({_NUMBER})(?!\w)")
            else:
                parts.append(r"\s+".join(re.escape(w) for w in re.split(r" +", piece)))
        lines.append("".join(parts))
    return ".*?".join(lines), wanted


def report(results: list[CellCheck]) -> str:
    """One line per book cell: its status and, where they differ, the two texts."""
    lines = []
    for r in results:
        line = f"[{r.number:2d}] {r.status:9s} {r.detail}"
        if r.values:
            line += ": " + ", ".join(f"{got:g} vs {want:g}" for got, want, _ in r.values[:6])
        if r.status == "differs":
            line += f"\n     got:      {r.got[:300]!r}\n     the book: {r.expected[:300]!r}"
        lines.append(line)
    counts = {s: sum(r.status == s for r in results) for s in ("match", "differs")}
    lines.append(f"{counts['match']} match, {counts['differs']} differ, of {len(results)} cells")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """``build`` (write the notebook), ``check`` (in sync?), ``run``, ``starter``."""
    nbformat = _nbformat()
    parser = argparse.ArgumentParser(prog="python -m dl_ch2_tools.notebook")
    parser.add_argument("command", choices=["build", "check", "run", "starter"])
    parser.add_argument("--out", type=Path, help="run: executed notebook; starter: its path")
    parser.add_argument("--quick", action="store_true", help="run the shortened cells")
    args = parser.parse_args(argv)
    built = dumps(build_notebook(parse_source(SOURCE.read_text(encoding="utf-8"))))
    if args.command == "build":
        _write(NOTEBOOK, built)
        return 0
    if args.command == "check":
        same = NOTEBOOK.exists() and NOTEBOOK.read_text(encoding="utf-8") == built
        print(f"{NOTEBOOK.name}: {'in sync with' if same else 'out of sync with'} {SOURCE.name}")
        return 0 if same else 1
    nb = nbformat.reads(built, as_version=4)
    if args.command == "starter":
        _write(args.out or Path("chapter02_starter.ipynb"), dumps(starter_notebook(nb)))
        return 0
    executed = execute(nb, quick=args.quick)
    results = compare(executed, quick=args.quick)
    _write(args.out or EXECUTED, dumps(executed))
    print(report(results))
    return 1 if any(r.status == "differs" for r in results) else 0


def _nbformat() -> Any:
    """nbformat (the test and conformance extras' dependency), imported on first use."""
    import importlib

    return importlib.import_module("nbformat")


def _write(path: Path, text: str) -> None:
    from conformance.atomic import atomic_path

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")
    print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    raise SystemExit(main())
