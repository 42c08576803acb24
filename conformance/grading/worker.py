"""The worker: imports one submission and serves its adapter's verbs over a pipe.

Run as a script from a folder holding copies of this file, ``wire.py`` and ``curves.py``
(standard library plus NumPy: nothing of the grader, its specs or its answers is needed or
reachable). The grader's side is ``conformance.grading.client``.

    python -I -S worker.py --in FD --out FD --adapter FILE_OR_MODULE [--site DIR]
                           [--path DIR] [--verbs NAME,NAME,...]

Requests and replies (``wire`` messages):

- first, unasked, ``{"hello": metadata}`` or ``{"load_error": text}``;
- ``{"op": "call", "verb": v, "args": [...], "kwargs": {...}}``: ``{"ok": result}``, where
  every result that is not plain data (an array, a tensor, a model) stays here as a handle;
- ``{"op": "to_numpy", "value": x}``: ``{"ok": array}`` with the array as data;
- ``{"op": "float", "value": handle}``: ``{"ok": float(obj)}``;
- ``{"op": "written", "tokens": [...]}``: ``{"ok": [bool, ...]}``, whether each of the
  spec's arrays (``wire.Received``) was written here since the grader sent it;
- ``{"op": "release"}``: drops every handle and array (the end of a spec);
- any error: ``{"err": {"type", "mro", "message"}}``, BaseExceptions included (a verb that
  calls ``sys.exit`` or raises KeyboardInterrupt fails its spec; the worker goes on).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys
from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve().parent
if __package__:
    from conformance import curves  # imported as conformance.grading.worker (type checks)
    from conformance.grading import book_names, cells, wire
else:  # run as a script from a copied folder
    sys.path.insert(0, str(_HERE))
    # the allowed libraries (--site) and a module adapter's folder (--path), before numpy
    _extra = [v for k, v in zip(sys.argv, sys.argv[1:], strict=False) if k in ("--site", "--path")]
    sys.path[1:1] = _extra
    import book_names  # type: ignore[no-redef]
    import cells  # type: ignore[no-redef]
    import curves  # type: ignore[no-redef]
    import wire  # type: ignore[no-redef]

import numpy as np  # noqa: E402 - after the allowed libraries are on the path

_META = ("name", "version", "devices", "dtypes", "capabilities", "library_versions")
_MAX_TEXT = 8000
#: What loading did to run the submission (cells that failed, book names found): the report's.
_NOTES: list[str] = []


class Server:
    """The adapter, its handles, and the request loop."""

    def __init__(self, adapter: Any, curves: dict[str, Any]) -> None:
        self.adapter = adapter
        self.curves = curves
        self.objects: dict[int, Any] = {}
        self.next_id = 1
        self.received = wire.Received()  # the grader's arrays of this spec, by token

    def to_handle(self, obj: Any) -> wire.Handle:
        hid = self.next_id
        self.next_id += 1
        self.objects[hid] = obj
        return wire.Handle(hid, type(obj).__name__)

    def resolve(self, hid: int, kind: str) -> Any:
        if hid not in self.objects:
            raise wire.WireError(f"unknown handle {hid}")
        return self.objects[hid]

    def curve(self, name: str) -> Any:
        if name not in self.curves:
            raise wire.WireError(f"unknown curve {name!r}")
        return self.curves[name]

    def decode(self, data: Any, buffers: list[Any]) -> Any:
        return wire.decode(
            data, buffers, resolve=self.resolve, curves=self.curve, received=self.received
        )

    def handle(self, header: dict[str, Any], buffers: list[Any]) -> tuple[Any, list[Any]]:
        op, out = header.get("op"), []  # type: ignore[var-annotated]
        if op == "release":
            self.objects.clear()
            self.received.clear()
            return {"ok": None}, out
        if op == "written":
            return {"ok": self.received.written(header.get("tokens"))}, out
        if op == "call":
            fn = getattr(self.adapter, str(header["verb"]), None)
            args = self.decode(header.get("args", []), buffers)
            kwargs = self.decode(header.get("kwargs", {"d": []}), buffers)
            result = fn(*args, **kwargs)  # type: ignore[misc]
            return {"ok": wire.encode(result, out, to_handle=self.to_handle)}, out
        if op == "to_numpy":
            result = self.adapter.to_numpy(self.decode(header["value"], buffers))
            if isinstance(result, np.ndarray) and result.dtype.kind not in "biufc":
                kind = result.dtype.str if result.dtype.kind in "US" else "|O"
                return {"nonnumeric": kind}, out  # the grader says: not numbers
            if isinstance(result, np.ndarray):
                return {"ok": wire.encode_array(result, out)}, out
            return {"ok": wire.encode(result, out, to_handle=self.to_handle)}, out
        if op == "float":
            return {"ok": float(self.decode(header["value"], buffers))}, out
        raise wire.WireError(f"unknown request {op!r}")


def _error(exc: BaseException) -> dict[str, Any]:
    try:
        text = str(exc)
    except BaseException:  # a __str__ that raises
        text = "(its message could not be read)"
    mro = [c.__name__ for c in type(exc).__mro__][:20]
    return {"err": {"type": type(exc).__name__, "mro": mro, "message": text[:_MAX_TEXT]}}


def _metadata(adapter: Any, known: tuple[str, ...] = ()) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    for attr in _META:
        if not hasattr(adapter, attr):
            continue
        value = getattr(adapter, attr)
        try:
            wire.encode(value, [])
            meta[attr] = value
        except (wire.WireError, TypeError, RecursionError):
            meta[attr] = {"unsendable": type(value).__name__}
    # dir() misses verbs served by __getattr__: the grader's verb names are asked for too
    names = {n for n in dir(adapter) if not n.startswith("_")} | set(known)
    meta["verbs"] = sorted(
        n for n in names if not n.startswith("_") and callable(getattr(adapter, n, None))
    )
    if _NOTES:  # what the grader did to run it (book names, cells)
        meta["notes"] = [str(n)[:500] for n in _NOTES[:200]]
    exp = getattr(adapter, "expectations_file", None)
    if exp is not None:
        # read here, with the submission's rights: the grader never opens a path it names
        try:
            meta["expectations"] = Path(str(exp)).read_text()[: 1 << 20]
        except OSError as exc:
            meta["expectations_error"] = f"{exp}: {exc.strerror or exc}"
    return meta


def load(target: str) -> Any:
    """The ``ADAPTER`` of a file (``path.py[:attr]``) or a module (``pkg.mod[:attr]``); a
    notebook (its cells as ``.cells.json``) runs cell by cell; with no ``ADAPTER``, an
    adapter built from the book's names the code defines (``book_names``)."""
    path, _, attr = target.partition(":")
    notes: list[str] = []
    if path.endswith(".cells.json") or (path.endswith(".py") and _by_book_names(path)):
        sys.path.insert(0, str(Path(path).parent))
        spellings = tuple(s for names in book_names.BOOK_NAMES.values() for s in names)
        module, notes = cells.run_notebook(Path(path), spellings)
    elif path.endswith(".py"):
        module = _exec_file(Path(path))
    else:
        module = importlib.import_module(path)
    name = attr or "ADAPTER"
    if hasattr(module, name):
        adapter = getattr(module, name)
        _NOTES[:] = notes
        return adapter
    more = _folder_modules(Path(path).parent, module)
    built = None if attr else book_names.book_adapter(vars(module), Path(path).stem, more)
    if built is None and not attr and path.endswith(".cells.json"):
        # a notebook is graded by the book's names: one that defines none (a blank starter)
        # scores each piece "not submitted", rather than failing to load
        built = book_names.BookAdapter(vars(module), Path(path).stem, more)
    if built is None:
        raise AttributeError(
            f"{path} has no attribute {name} (the adapter object) and defines none of the "
            f"book's names (naive_relu, NaiveDense, BatchGenerator, fit, ...)"
            + (f"; {'; '.join(notes[:20])}" if notes else "")
        )
    _NOTES[:] = notes + built.notes
    return built


def _folder_modules(folder: Path, main: Any) -> list[dict[str, Any]]:
    """The globals of the modules the submission imported from its own folder."""
    out = []
    for mod in list(sys.modules.values()):
        file = getattr(mod, "__file__", None)
        if mod is not main and file and Path(file).resolve().is_relative_to(folder.resolve()):
            out.append(vars(mod))
    return out


def _by_book_names(path: str) -> bool:
    """A .py file that never names ADAPTER runs a statement at a time, like a notebook."""
    try:
        return "ADAPTER" not in Path(path).read_text()
    except (OSError, UnicodeDecodeError):
        return False


def _exec_file(file: Path) -> Any:
    sys.path.insert(0, str(file.parent))  # a folder submission imports its own modules
    spec = importlib.util.spec_from_file_location("submission", file)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {file.name}")
    module = importlib.util.module_from_spec(spec)
    sys.modules["submission"] = module
    spec.loader.exec_module(module)
    return module


def serve(fd_in: int, fd_out: int, target: str, known: tuple[str, ...] = ()) -> int:
    table = {n: getattr(curves, n) for n in curves.CURVE_NAMES}
    try:
        adapter = load(target)
        hello: dict[str, Any] = {"hello": wire.encode(_metadata(adapter, known), [])}
    except BaseException as exc:
        info = _error(exc)["err"]
        wire.write_message(fd_out, {"load_error": f"{info['type']}: {info['message']}"}, [])
        return 0
    wire.write_message(fd_out, hello, [])
    server = Server(adapter, table)
    while True:
        try:
            header, buffers = wire.read_message(fd_in)
        except EOFError:
            return 0
        try:
            reply, out = server.handle(header, buffers)
            parts = wire.pack(reply, out)
        except BaseException as exc:
            parts = wire.pack(_error(exc), [])
        wire.write_parts(fd_out, parts)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="worker")
    p.add_argument("--in", dest="fd_in", type=int, required=True)
    p.add_argument("--out", dest="fd_out", type=int, required=True)
    p.add_argument("--adapter", required=True)
    p.add_argument("--site", action="append", default=[], help="allowed libraries")
    p.add_argument("--path", action="append", default=[], help="where a module adapter lies")
    p.add_argument("--verbs", default="", help="the verb names the grader may call")
    args = p.parse_args(argv)
    # a print() of the submission must not corrupt the wire: stdout goes where stderr goes
    os.dup2(2, 1)
    known = tuple(v for v in args.verbs.split(",") if v)
    return serve(args.fd_in, args.fd_out, args.adapter, known)


if __name__ == "__main__":
    sys.exit(main())
