"""The wire between grader and worker carries plain data only, and refuses everything else."""

from __future__ import annotations

import json
import math
import os
import struct
import threading
import time
from typing import Any

import numpy as np
import pytest

from conformance.grading import wire


def roundtrip(value: Any) -> Any:
    r, w = os.pipe()
    buffers: list[Any] = []
    data = wire.encode(value, buffers)
    t = threading.Thread(target=wire.write_message, args=(w, {"ok": data}, buffers))
    t.start()
    header, bufs = wire.read_message(r, deadline=time.monotonic() + 10)
    t.join()
    os.close(r)
    os.close(w)
    return wire.decode(header["ok"], bufs)


def raw(header_bytes: bytes, *buffers: bytes, deadline: float | None = None) -> Any:
    """Feed hand-made bytes to the reader (what a hostile worker could send)."""
    r, w = os.pipe()
    os.write(w, struct.pack(">I", len(header_bytes)) + header_bytes + b"".join(buffers))
    os.close(w)
    try:
        header, bufs = wire.read_message(r, deadline=deadline, max_bytes=1 << 20)
        return wire.decode(header["ok"], bufs)
    finally:
        os.close(r)


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        -(2**70),
        0.1,
        float("inf"),
        "é",
        [1, [2, (3, {"k": "v"})]],
        (),
        slice(1, None, -2),
        Ellipsis,
        frozenset({"training", "autodiff"}),
    ],
    ids=lambda v: type(v).__name__,
)
def test_plain_values_cross_unchanged(value: Any) -> None:
    got = roundtrip(value)
    assert got == value and type(got) is type(value)


def test_nan_crosses_as_nan() -> None:
    assert math.isnan(roundtrip(float("nan")))


@pytest.mark.parametrize(
    "array",
    [
        np.arange(12, dtype=np.float32).reshape(3, 4),
        np.array(2.5),
        np.zeros((0, 7), dtype=np.int64),
        np.array([True, False]),
        np.arange(10, dtype=np.complex64)[::3],  # not contiguous
        np.arange(6, dtype=">f8").reshape(2, 3),  # big-endian
    ],
    ids=lambda a: f"{a.dtype}{a.shape}",
)
def test_arrays_cross_exactly_as_writable_base_ndarrays(array: np.ndarray) -> None:
    got = roundtrip(array)
    assert type(got) is np.ndarray and got.flags.writeable
    assert got.dtype == array.dtype and got.shape == array.shape
    np.testing.assert_array_equal(got, array)


def test_an_ndarray_subclass_arrives_as_a_base_ndarray() -> None:
    class Liar(np.ndarray):
        def __eq__(self, other: object) -> Any:
            return True

    got = roundtrip(np.zeros(3).view(Liar))
    assert type(got) is np.ndarray
    assert not (got == np.ones(3)).any()


def test_numpy_scalars_keep_their_type() -> None:
    got = roundtrip([np.float32(1.5), np.int64(7)])
    assert [type(v) for v in got] == [np.float32, np.int64]


@pytest.mark.parametrize(
    "value",
    [np.array(["a"]), np.array([object()]), np.zeros(2, dtype=[("x", "f8")]), object(), b"x"],
    ids=["str array", "object array", "structured", "object", "bytes"],
)
def test_what_is_not_plain_data_cannot_be_sent(value: Any) -> None:
    with pytest.raises(wire.WireError):
        wire.encode(value, [])


def test_unsendable_objects_become_handles_when_asked() -> None:
    made: list[Any] = []

    def to_handle(obj: Any) -> wire.Handle:
        made.append(obj)
        return wire.Handle(len(made), type(obj).__name__)

    out = wire.encode([object(), np.zeros(2)], [], to_handle=to_handle)
    assert out == [{"h": 1, "k": "object"}, {"h": 2, "k": "ndarray"}]
    assert wire.decode(out, []) == [wire.Handle(1, "object"), wire.Handle(2, "ndarray")]


def _array_header(dtype: str, shape: list[int], nbytes: int) -> bytes:
    head = {"ok": {"a": 0, "dtype": dtype, "shape": shape}, "buffers": [nbytes]}
    return json.dumps(head).encode()


@pytest.mark.parametrize(
    ("header", "buffers", "message"),
    [
        (b"not json", [], "not JSON"),
        (b'{"ok": 1}', [], "buffer list"),
        (b'{"ok": {"zz": 1}, "buffers": []}', [], "unknown tag"),
        (_array_header("|O", [1], 8), [b"\0" * 8], "plain numeric"),
        (_array_header("<f8", [3], 16), [b"\0" * 16], "does not match"),
        (_array_header("<f8", [-1], 8), [b"\0" * 8], "shape"),
        (_array_header("V8", [1], 8), [b"\0" * 8], "plain numeric"),
        (b'{"ok": {"a": 5, "dtype": "<f8", "shape": []}, "buffers": []}', [], "missing buffer"),
        (b'{"ok": {"x": "1.0"}, "buffers": []}', [], "finite"),
        (b'{"ok": {"h": "1"}, "buffers": []}', [], "malformed handle"),
        (b'{"ok": {"f": "square_grad"}, "buffers": []}', [], "curve"),
        (b'{"ok": {"d": [[1, 2]]}, "buffers": []}', [], "dict entry"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_a_malformed_message_is_a_wire_error(
    header: bytes, buffers: list[bytes], message: str
) -> None:
    with pytest.raises(wire.WireError, match=message):
        raw(header, *buffers)


def test_deep_nesting_and_huge_messages_are_refused() -> None:
    deep: Any = []
    for _ in range(100):
        deep = [deep]
    with pytest.raises(wire.WireError, match="nested"):
        wire.encode(deep, [])
    nested = b'{"ok": ' + b"[" * 200 + b"]" * 200 + b', "buffers": []}'
    with pytest.raises(wire.WireError, match="nested"):
        raw(nested)
    big = json.dumps({"ok": None, "buffers": [1 << 30]}).encode()
    with pytest.raises(wire.WireError, match="over"):
        raw(big)


def test_a_late_or_cut_reply_is_a_timeout_or_an_eof() -> None:
    r, w = os.pipe()
    t0 = time.monotonic()
    with pytest.raises(TimeoutError):
        wire.read_message(r, deadline=time.monotonic() + 0.3)
    assert 0.25 < time.monotonic() - t0 < 5
    os.write(w, struct.pack(">I", 50) + b"{")  # promises 50 bytes, sends 1, then hangs up
    os.close(w)
    with pytest.raises(EOFError):
        wire.read_message(r, deadline=time.monotonic() + 5)
    os.close(r)
