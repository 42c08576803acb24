"""A notebook submission as the Python file it stands for: its code cells, in order.

Students of this book write notebooks. The grader reads the ``.ipynb`` (JSON, through
nbformat: nothing in it runs here), keeps the code cells in order and drops what is not
Python: IPython magics (``%time``, a ``%%capture`` cell) and shell lines (``!pip install``),
each replaced by ``pass`` so the code around it keeps its shape. What was dropped is listed,
and the report says so. The worker then imports the file like any other submission.
"""

from __future__ import annotations

import re
from pathlib import Path

__all__ = ["notebook_cells", "notebook_source"]

_ASSIGNED_MAGIC = re.compile(r"^[\w.,\s]+=\s*[%!]")  # files = !ls, t = %timeit -o f()


def notebook_source(path: Path) -> tuple[str, list[str]]:
    """(the notebook's code as one Python source, a note per line or cell dropped)."""
    try:
        import nbformat
    except ImportError as exc:  # the conformance extra installs it
        raise ValueError("grading a notebook needs nbformat: pip install nbformat") from exc
    try:
        nb = nbformat.read(str(path), as_version=4)  # type: ignore[no-untyped-call]
    except Exception as exc:  # nbformat's own errors: not JSON, not a notebook
        raise ValueError(f"{path.name} is not a readable notebook: {exc}") from None
    out: list[str] = []
    dropped: list[str] = []
    for number, cell in enumerate(nb.cells, 1):
        if cell.cell_type != "code":
            continue
        lines = str(cell.source).splitlines()
        if lines and lines[0].lstrip().startswith("%%"):
            dropped.append(f"cell {number}: the cell magic {lines[0].strip()[:60]!r}")
            continue
        out.append(f"# -- cell {number}")
        for line in lines:
            text = line.lstrip()
            if text.startswith(("%", "!")) or _ASSIGNED_MAGIC.match(text):
                dropped.append(f"cell {number}: {text[:60]!r}")
                out.append(line[: len(line) - len(text)] + "pass  # an IPython line, dropped")
            else:
                out.append(line)
    return "\n".join(out) + "\n", dropped


def notebook_cells(path: Path) -> list[dict[str, object]]:
    """The notebook's code cells as ``{"number", "source"}`` (numbered among all its cells,
    as Jupyter shows them), for the worker to run one by one (``cells.run_notebook``).

    Read as JSON (nbformat 4, or 3's worksheets): no dependency, so the Gradescope bundle
    grades notebooks with the grader's own requirements."""
    import json

    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"{path.name} is not a readable notebook: {exc}") from None
    cells = doc.get("cells") if isinstance(doc, dict) else None
    if cells is None and isinstance(doc, dict) and doc.get("worksheets"):
        cells = doc["worksheets"][0].get("cells")
    if not isinstance(cells, list):
        raise ValueError(f"{path.name} is not a readable notebook: it has no list of cells")
    out: list[dict[str, object]] = []
    for number, cell in enumerate(cells, 1):
        if not isinstance(cell, dict) or cell.get("cell_type") != "code":
            continue
        source = cell.get("source", cell.get("input", ""))
        text = "".join(source) if isinstance(source, list) else str(source)
        out.append({"number": number, "source": text})
    return out
