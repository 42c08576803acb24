"""The wire between the grader and the worker that runs a submission: plain data only.

A message is a 4-byte big-endian length, a JSON header, then the raw bytes of the NumPy
arrays the header names. What it can carry: ``None``, ``bool``, ``int``, ``float`` (NaN and
infinities included), ``str``, lists, tuples, dicts with string keys, sets of those,
``slice`` and ``Ellipsis`` (indices for ``getitem``), numeric NumPy arrays and scalars
(dtypes of kind b, i, u, f, c only: never object, void or structured), *handles* (an id
naming an object that stays in the worker) and *curves* (the name of one of the 1-D
gradient functions of ``conformance/curves.py``, which the worker has its own copy of).

Array identity within a spec (issue 27.7): the grader's arrays go out through a ``Sent``
table, so an array sent twice in one spec is one object in the worker (``Received``), as an
in-process call would see it; the worker reports, when asked and as data, which of them it
wrote into; nothing it reports is ever written into the grader's memory (``Sent``).

Decoding never unpickles or evaluates anything: it parses JSON and rebuilds each array as a
fresh, writable, base ``np.ndarray`` from bytes, after checking dtype, shape and length.
This module is standard library plus NumPy, so the worker can run it from a copy.
"""

from __future__ import annotations

import json
import math
import os
import re
import select
import struct
import time
import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "MAX_HEADER_BYTES",
    "Handle",
    "Received",
    "Sent",
    "Shared",
    "WireError",
    "decode",
    "encode",
    "read_message",
    "write_message",
]

#: The JSON header of one message may not exceed this (the arrays come after it).
MAX_HEADER_BYTES = 16 * 2**20
_LEN = struct.Struct(">I")
_DTYPE = re.compile(r"^[<>|=]?[biufc][1-9][0-9]?$")
_MAX_DEPTH = 64


class WireError(ValueError):
    """A message that breaks the protocol: malformed, oversized, late, or cut short."""


@dataclass(frozen=True)
class Handle:
    """An object that stays in the worker, named by ``id``; ``kind`` is its type's name."""

    id: int
    kind: str


def _check_dtype(text: Any) -> np.dtype[Any]:
    if not isinstance(text, str) or not _DTYPE.match(text):
        raise WireError(f"array dtype {text!r} is not a plain numeric dtype")
    dtype = np.dtype(text)
    if dtype.kind not in "biufc" or dtype.fields is not None:
        raise WireError(f"array dtype {text!r} is not a plain numeric dtype")
    return dtype


def encode(obj: Any, buffers: list[Any], *, to_handle: Any = None, depth: int = 0) -> Any:
    """``obj`` as JSON-able data; array bytes are appended to ``buffers``.

    ``to_handle(obj) -> Handle`` turns what cannot be sent (a tensor, a model) into a handle;
    without it such an object is a WireError.
    """
    if depth > _MAX_DEPTH:
        raise WireError("data nested too deeply")
    t = type(obj)
    if obj is None or t in (bool, int, str):
        return obj
    if t is float:
        return obj if math.isfinite(obj) else {"x": repr(obj)}
    if t is list:
        return [encode(v, buffers, to_handle=to_handle, depth=depth + 1) for v in obj]
    if t in (tuple, set, frozenset):
        tag = "t" if t is tuple else "S"
        items = obj if t is tuple else sorted(obj, key=repr)
        return {tag: [encode(v, buffers, to_handle=to_handle, depth=depth + 1) for v in items]}
    if t is dict:
        if not all(type(k) is str for k in obj):
            raise WireError("dict keys must be strings")
        return {
            "d": [
                [k, encode(v, buffers, to_handle=to_handle, depth=depth + 1)]
                for k, v in obj.items()
            ]
        }
    if t is slice:
        parts = (obj.start, obj.stop, obj.step)
        return {"s": [encode(v, buffers, to_handle=to_handle, depth=depth + 1) for v in parts]}
    if obj is Ellipsis:
        return {"e": 1}
    if t is Handle:
        return {"h": obj.id}
    if t is Shared:
        return obj.table.encode(obj.array, obj.where, buffers)
    if isinstance(obj, np.ndarray) and to_handle is None:
        return _encode_array(obj, buffers, scalar=False)
    if isinstance(obj, np.generic) and to_handle is None:
        return _encode_array(np.asarray(obj), buffers, scalar=True)
    curve = getattr(obj, "__dl_ch2_curve__", None)
    if isinstance(curve, str) and to_handle is None:
        return {"f": curve}
    if to_handle is not None:
        return {"h": to_handle(obj).id, "k": type(obj).__name__}
    raise WireError(f"cannot send a {type(obj).__name__}")


def _encode_array(a: np.ndarray, buffers: list[Any], *, scalar: bool) -> Any:
    base = np.asarray(a).view(np.ndarray)  # ascontiguousarray would make a 0-d array 1-d
    if not base.flags.c_contiguous:
        base = base.copy(order="C")
    dtype = _check_dtype(base.dtype.str)
    # a view of the array's memory, not a copy (MNIST is 188 MB in float32)
    buffers.append(memoryview(base.reshape(-1).view(np.uint8)))  # type: ignore[arg-type]
    out = {"a": len(buffers) - 1, "dtype": dtype.str, "shape": list(base.shape)}
    if scalar:
        out["scalar"] = True
    return out


def encode_array(a: np.ndarray, buffers: list[Any]) -> Any:
    """An array sent as data even where other objects become handles (``to_numpy``)."""
    return _encode_array(a, buffers, scalar=False)


# -- array identity within a spec (issue 27.7) ---------------------------------------------

#: The most arrays one spec may send by identity (a token names each): past it, a fresh copy.
MAX_SHARED = 1 << 16


def _stamp(a: np.ndarray) -> tuple[int, tuple[int, ...], str]:
    """An array's checksum, shape and dtype: was it written since it was sent?"""
    flat = np.ascontiguousarray(a).reshape(-1).view(np.uint8)
    return zlib.crc32(memoryview(flat)), a.shape, a.dtype.str  # type: ignore[arg-type]


@dataclass(frozen=True, eq=False)
class Shared:
    """A grader's array on its way out through ``table`` (``Sent.share``); ``where`` says
    which argument of which call it is, for messages."""

    table: Sent
    array: np.ndarray
    where: str


@dataclass
class _Entry:
    token: int
    array: np.ndarray  # held until the spec ends: its id() names it meanwhile
    stamp: tuple[int, tuple[int, ...], str]
    where: str  # the first call and argument it was given as


@dataclass
class Sent:
    """The grader's side of array identity: the NumPy arrays sent in one spec (``clear``
    at each spec's start and with each fresh worker).

    In-process, an array given twice is one object, and what the implementation writes into
    it, the caller sees. Over the wire, the first send of an array carries its bytes and a
    token; a later send of the same object carries the token alone, so that the worker
    hands the implementation the object it has (``Received``); if the grader wrote into the
    array meanwhile, its bytes go again and the worker copies them into that object.

    Writes go one way only: nothing the worker sends is written into the grader's memory.
    The grader asks which of its arrays the worker wrote into (``Connection.written``); the
    answer is untrusted data and only ever turns a spec's check *off* (nothing written:
    the expected values are the grader's own, computed from its own unwritten arrays, as
    for an implementation that copies what it is given) or makes the spec fail (written).
    A worker that lies gains nothing it could not get by behaving correctly: a false
    "unchanged" is what a correct implementation answers, a false "written" fails its own
    spec, and a malformed answer (tokens never sent, huge ids, other types or lengths)
    breaks the protocol, which fails the spec.
    """

    by_id: dict[int, _Entry] = field(default_factory=dict)

    def share(self, a: np.ndarray, where: str) -> Shared:
        return Shared(self, a, where)

    def encode(self, a: np.ndarray, where: str, buffers: list[Any]) -> Any:
        entry = self.by_id.get(id(a))
        if entry is not None and entry.array is a:
            stamp = _stamp(a)
            if stamp == entry.stamp:
                return {"r": entry.token}
            entry.stamp = stamp  # the grader wrote into it: the worker takes the new bytes
        elif len(self.by_id) < MAX_SHARED:
            entry = _Entry(len(self.by_id) + 1, a, _stamp(a), where)
            self.by_id[id(a)] = entry
        else:
            return _encode_array(a, buffers, scalar=False)
        out = _encode_array(a, buffers, scalar=False)
        out["r"] = entry.token
        return out

    def tokens(self, arrays: list[Any]) -> list[_Entry | None]:
        """The entries of ``arrays`` (None: never sent in this spec)."""
        out = []
        for a in arrays:
            entry = self.by_id.get(id(a))
            out.append(entry if entry is not None and entry.array is a else None)
        return out

    def clear(self) -> None:
        self.by_id.clear()


@dataclass
class Received:
    """The worker's side of ``Sent``: the spec's arrays by token, and their stamps as last
    sent by the grader (``written`` compares). This runs beside the submission, which can
    rewrite it: the grader trusts nothing it says (``Sent``)."""

    arrays: dict[int, np.ndarray] = field(default_factory=dict)
    stamps: dict[int, Any] = field(default_factory=dict)
    dirty: set[int] = field(default_factory=set)  # written before the grader sent it again

    def decode(self, data: dict[str, Any], buffers: list[Any]) -> np.ndarray:
        token = data["r"]
        if type(token) is not int or not 0 < token <= MAX_SHARED or data.get("scalar"):
            raise WireError("malformed array reference")
        old = self.arrays.get(token)
        if "a" not in data:
            if old is None:
                raise WireError(f"a reference to an array never sent ({token})")
            return old
        arr = _decode_array(data, buffers)
        if old is not None and _stamp(old) != self.stamps[token]:
            self.dirty.add(token)  # the grader's new bytes must not hide the earlier write
        same = old is not None and old.shape == arr.shape and old.dtype == arr.dtype
        if same and old is not None and old.flags.writeable:  # the grader wrote into it
            np.copyto(old, arr)  # one object, the new bytes
            arr = old
        self.arrays[token], self.stamps[token] = arr, _stamp(arr)
        return arr

    def written(self, tokens: Any) -> list[bool]:
        """For each token, whether its array was written here since the grader first sent it
        (in this spec): new bytes from the grader do not hide an earlier write."""
        if type(tokens) is not list or not all(type(t) is int for t in tokens):
            raise WireError("malformed list of array tokens")
        out = []
        for t in tokens:
            arr = self.arrays.get(t)
            out.append(arr is not None and (t in self.dirty or _stamp(arr) != self.stamps[t]))
        return out

    def clear(self) -> None:
        self.arrays.clear()
        self.stamps.clear()
        self.dirty.clear()


def decode(data: Any, buffers: list[Any], *, resolve: Any = None, curves: Any = None,
           received: Received | None = None) -> Any:  # fmt: skip
    """Rebuild what ``encode`` made. ``resolve(id, kind)`` gives the object of a handle
    (default: a ``Handle``); ``curves(name)`` gives a curve's function; ``received`` (the
    worker's) gives the spec's arrays by token: without it, a token is a WireError (the
    grader reads replies without)."""
    return _decode(data, buffers, (resolve, curves, received), 0)


def _decode(data: Any, buffers: list[Any], ctx: tuple[Any, Any, Any], depth: int) -> Any:
    if depth > _MAX_DEPTH:
        raise WireError("data nested too deeply")
    if data is None or type(data) in (bool, int, float, str):
        return data
    if type(data) is list:
        return [_decode(v, buffers, ctx, depth + 1) for v in data]
    if type(data) is not dict or len(data) == 0:
        raise WireError(f"unexpected {type(data).__name__} in a message")

    resolve, curves, received = ctx

    def rec(v: Any) -> Any:
        return _decode(v, buffers, ctx, depth + 1)

    if "x" in data:
        value = float(str(data["x"]))
        if math.isfinite(value):
            raise WireError("a non-finite float marker holds a finite number")
        return value
    if "t" in data:
        return tuple(rec(v) for v in _list(data["t"]))
    if "S" in data:
        return frozenset(rec(v) for v in _list(data["S"]))
    if "d" in data:
        out = {}
        for pair in _list(data["d"]):
            if type(pair) is not list or len(pair) != 2 or type(pair[0]) is not str:
                raise WireError("malformed dict entry")
            out[pair[0]] = rec(pair[1])
        return out
    if "s" in data:
        parts = _list(data["s"])
        if len(parts) != 3:
            raise WireError("malformed slice")
        return slice(*(rec(v) for v in parts))
    if "e" in data:
        return Ellipsis
    if "r" in data:
        if received is None:
            raise WireError("an array reference where none is expected")
        return received.decode(data, buffers)
    if "h" in data:
        hid, kind = data["h"], data.get("k", "object")
        if type(hid) is not int or type(kind) is not str:
            raise WireError("malformed handle")
        return resolve(hid, kind) if resolve is not None else Handle(hid, kind[:100])
    if "f" in data:
        if curves is None or type(data["f"]) is not str:
            raise WireError("a curve where none is expected")
        return curves(data["f"])
    if "a" in data:
        return _decode_array(data, buffers)
    raise WireError(f"unknown tag in {sorted(data)[:3]}")


def _list(v: Any) -> list[Any]:
    if type(v) is not list:
        raise WireError("malformed container")
    return v


def _decode_array(data: dict[str, Any], buffers: list[Any]) -> Any:
    index, shape = data["a"], data.get("shape")
    dtype = _check_dtype(data.get("dtype"))
    if type(index) is not int or not 0 <= index < len(buffers):
        raise WireError("array refers to a missing buffer")
    if type(shape) is not list or not all(type(n) is int and n >= 0 for n in shape):
        raise WireError(f"malformed array shape {shape!r}")
    if len(shape) > 32:
        raise WireError("array of more than 32 dimensions")
    raw = buffers[index]
    if math.prod(shape) * dtype.itemsize != len(raw):
        raise WireError(
            f"array of shape {tuple(shape)} {dtype} does not match its {len(raw)} bytes"
        )
    arr = np.frombuffer(raw, dtype=dtype).reshape(shape)
    if not arr.flags.writeable:  # bytes given directly (tests): own a copy
        arr = arr.copy()
    return arr[()] if data.get("scalar") else arr


# -- framing ------------------------------------------------------------------------------


def pack(header: Any, buffers: list[Any]) -> list[Any]:
    """The parts of one message: its length and JSON header, then the arrays' bytes."""
    head = dict(header)
    head["buffers"] = [memoryview(b).nbytes for b in buffers]
    text = json.dumps(head, allow_nan=False, separators=(",", ":")).encode("utf-8")
    return [_LEN.pack(len(text)) + text, *buffers]


def write_parts(fd: int, parts: list[Any]) -> None:
    for part in parts:
        data = memoryview(part)
        while data:
            data = data[os.write(fd, data) :]


def write_message(fd: int, header: Any, buffers: list[Any]) -> None:
    write_parts(fd, pack(header, buffers))


def _read_exact(fd: int, n: int, deadline: float | None) -> bytearray:
    out = bytearray(n)
    view, done = memoryview(out), 0
    while done < n:
        if deadline is not None:
            wait = deadline - time.monotonic()
            if wait <= 0:
                raise TimeoutError
            ready, _, _ = select.select([fd], [], [], wait)
            if not ready:
                raise TimeoutError
        got = os.readv(fd, [view[done : done + (1 << 22)]])
        if not got:
            raise EOFError
        done += got
    return out


def read_message(
    fd: int, *, deadline: float | None = None, max_bytes: int = 2**31
) -> tuple[dict[str, Any], list[bytearray]]:
    """One message from ``fd``: (header, buffers). Raises TimeoutError past ``deadline``
    (a ``time.monotonic()`` value), EOFError if the other end closed, WireError if the
    message is malformed or larger than ``max_bytes``."""
    (size,) = _LEN.unpack(_read_exact(fd, _LEN.size, deadline))
    if size > min(MAX_HEADER_BYTES, max_bytes):
        raise WireError(f"a message header of {size} bytes is over the limit")
    try:
        header = json.loads(_read_exact(fd, size, deadline).decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise WireError(f"a message header is not JSON: {exc}") from None
    lengths = header.get("buffers") if type(header) is dict else None
    if type(lengths) is not list or not all(type(n) is int and n >= 0 for n in lengths):
        raise WireError("a message header without a valid buffer list")
    if size + sum(lengths) > max_bytes:
        raise WireError(f"a message of {size + sum(lengths)} bytes is over {max_bytes}")
    return header, [_read_exact(fd, n, deadline) for n in lengths]
