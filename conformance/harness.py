"""What specs use to talk to the implementation and judge its answers.

``Impl`` wraps an adapter so that a missing verb, an exception or a wrong return type
becomes a failed spec with a readable message (never a crashed run), and remembers the
last call so failure messages can carry a copy-paste reproduction snippet.
``check_close`` compares shape and dtype exactly, then values within the tolerance table.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NoReturn

import numpy as np
import pytest

__all__ = ["TOLERANCES", "Impl", "check_close", "check_equal", "fail"]

#: (rtol, atol) by dtype, for values and for gradients. Values use torch.testing's
#: assert_close defaults; gradients allow for the longer chains of rounding behind them.
TOLERANCES: dict[str, dict[str, tuple[float, float]]] = {
    "float32": {"value": (1.3e-6, 1e-5), "grad": (1e-5, 1e-6)},
    "float64": {"value": (1e-7, 1e-7), "grad": (1e-7, 1e-9)},
}


def fail(message: str) -> NoReturn:
    pytest.fail(message, pytrace=False)


def _literal(x: Any) -> str:
    if isinstance(x, np.ndarray):
        if x.size <= 64:
            return f"np.array({x.tolist()!r}, dtype={str(x.dtype)!r})"
        return f"<array shape {x.shape} dtype {x.dtype}: see the spec's source>"
    if isinstance(x, (list, tuple)) and any(isinstance(v, np.ndarray) for v in x):
        inner = ", ".join(_literal(v) for v in x)
        return f"[{inner}]"
    return repr(x)


@dataclass
class Impl:
    """The implementation under test, as specs see it."""

    adapter: Any
    spec: str  # how it was selected (--impl), for the reproduction snippet
    dtype: str
    device: str
    calls: list[str] = field(default_factory=list)

    # -- capabilities ---------------------------------------------------------------------
    def claims(self, capability: str) -> bool:
        return capability in self.adapter.capabilities

    # -- calling verbs ----------------------------------------------------------------------
    def repro(self) -> str:
        lines = [
            "import numpy as np",
            "from conformance.adapter import load_adapter",
            f"impl = load_adapter({self.spec!r})",
            *self.calls[-6:],
        ]
        return "reproduce with:\n    " + "\n    ".join(lines)

    def call(self, verb: str, *args: Any, **kwargs: Any) -> Any:
        fn = getattr(self.adapter, verb, None)
        shown = ", ".join(
            [*(_literal(a) for a in args), *(f"{k}={_literal(v)}" for k, v in kwargs.items())]
        )
        self.calls.append(f"out = impl.{verb}({shown})")
        if fn is None or not callable(fn):
            fail(
                f"the adapter {self.adapter.name!r} lacks the verb {verb!r} "
                "(see conformance/README.md for its signature)"
            )
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # the implementation's own error is a failed spec
            error = exc
        fail(f"{verb}(...) raised {type(error).__name__}: {error}\n{self.repro()}")

    def arr(self, x: Any, dtype: str | None = None) -> Any:
        """NumPy -> the implementation's array; float inputs take the suite's dtype."""
        a = np.asarray(x)
        if dtype is None and a.dtype.kind == "f":
            dtype = self.dtype
        return self.call("asarray", a.astype(dtype) if dtype else a, dtype)

    def to_np(self, value: Any, what: str = "the result") -> np.ndarray:
        """The implementation's array -> NumPy, failing readably on a wrong type."""
        error: Exception | None = None
        try:
            out = self.adapter.to_numpy(value)
        except Exception as exc:
            error = exc
        if error is not None:
            fail(
                f"to_numpy({what}) raised {type(error).__name__}: {error}; {what} was a "
                f"{type(value).__name__}\n{self.repro()}"
            )
        if not isinstance(out, np.ndarray):
            fail(
                f"to_numpy({what}) returned {type(out).__name__}, not numpy.ndarray\n{self.repro()}"
            )
        if out.dtype.kind not in "biufc":
            fail(
                f"{what} is a {type(value).__name__}, which converts to an array of dtype "
                f"{out.dtype}, not numbers: wrong return type\n{self.repro()}"
            )
        return out

    def run(self, verb: str, *args: Any, **kwargs: Any) -> np.ndarray:
        """Call a verb whose result is one array; return it as NumPy."""
        return self.to_np(self.call(verb, *args, **kwargs), f"the result of {verb}")

    def run_many(self, verb: str, *args: Any, **kwargs: Any) -> list[np.ndarray]:
        out = self.call(verb, *args, **kwargs)
        if not isinstance(out, (list, tuple)):
            fail(f"{verb} must return a list or tuple, got {type(out).__name__}\n{self.repro()}")
        return [self.to_np(v, f"item {i} of {verb}'s result") for i, v in enumerate(out)]

    def scalar(self, verb: str, *args: Any, **kwargs: Any) -> float:
        out = self.call(verb, *args, **kwargs)
        try:
            return (
                float(out) if isinstance(out, (int, float)) else float(self.adapter.to_numpy(out))
            )
        except Exception as exc:
            error = exc
        fail(f"{verb} must return a number, got {type(out).__name__} ({error})\n{self.repro()}")

    def rejects(self, verb: str, *args: Any, **kwargs: Any) -> BaseException:
        """The verb must raise (any exception) instead of returning a result."""
        fn = getattr(self.adapter, verb, None)
        shown = ", ".join(_literal(a) for a in args)
        self.calls.append(f"impl.{verb}({shown})  # must raise")
        if fn is None:
            fail(f"the adapter {self.adapter.name!r} lacks the verb {verb!r}")
        try:
            out = fn(*args, **kwargs)
        except Exception as exc:
            return exc
        try:
            got = f"an array of shape {np.shape(self.adapter.to_numpy(out))}"
        except Exception:
            got = type(out).__name__
        fail(f"{verb} accepted invalid input and returned {got}; it must raise\n{self.repro()}")


def _where(idx: tuple[Any, ...]) -> str:
    return "[" + ", ".join(str(int(i)) for i in idx) + "]"


def check_close(
    impl: Impl,
    actual: np.ndarray,
    expected: np.ndarray,
    *,
    what: str,
    kind: str = "value",
    rtol: float | None = None,
    atol: float | None = None,
    expect_dtype: str | None = None,
) -> None:
    """Shape, then dtype, exactly; then values within (rtol, atol) of the tolerance table."""
    expected = np.asarray(expected)
    if actual.shape != expected.shape:
        fail(f"{what}: shape {actual.shape}, expected {expected.shape}\n{impl.repro()}")
    want_dtype = expect_dtype or (impl.dtype if expected.dtype.kind == "f" else None)
    if want_dtype is not None and str(actual.dtype) != want_dtype:
        fail(f"{what}: dtype {actual.dtype}, expected {want_dtype}\n{impl.repro()}")
    table_rtol, table_atol = TOLERANCES[impl.dtype][kind]
    rtol = table_rtol if rtol is None else rtol
    atol = table_atol if atol is None else atol
    a = actual.astype(np.float64)
    e = expected.astype(np.float64)
    ok = np.isclose(a, e, rtol=rtol, atol=atol, equal_nan=False)
    if ok.all():
        return
    diff = np.abs(a - e)
    diff = np.where(np.isnan(diff), np.inf, diff)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(e != 0, diff / np.abs(e), np.where(diff == 0, 0.0, np.inf))
    bad = int((~ok).sum())
    i_abs = np.unravel_index(int(np.argmax(diff)), diff.shape) if diff.ndim else ()
    i_rel = np.unravel_index(int(np.argmax(rel)), rel.shape) if rel.ndim else ()
    rel_text = "inf (expected 0)" if not np.isfinite(rel[i_rel]) else f"{float(rel[i_rel]):.3g}"
    fail(
        f"{what}: {bad} of {ok.size} values differ beyond rtol={rtol:g}, atol={atol:g} "
        f"({kind} tolerance, {impl.dtype})\n"
        f"  largest absolute difference {float(diff[i_abs]):.3g} at {_where(i_abs)}: "
        f"got {float(a[i_abs])!r}, expected {float(e[i_abs])!r}\n"
        f"  largest relative difference {rel_text} at {_where(i_rel)}: "
        f"got {float(a[i_rel])!r}, expected {float(e[i_rel])!r}\n{impl.repro()}"
    )


def check_equal(impl: Impl, actual: Any, expected: Any, *, what: str) -> None:
    if isinstance(expected, np.ndarray) or isinstance(actual, np.ndarray):
        same = np.shape(actual) == np.shape(expected) and np.array_equal(actual, expected)
    else:
        same = actual == expected
    if not same:
        fail(f"{what}: got {actual!r}, expected {expected!r}\n{impl.repro()}")


def check(impl: Impl, condition: bool, message: str) -> None:
    if not condition:
        fail(f"{message}\n{impl.repro()}")


Check = Callable[..., None]
