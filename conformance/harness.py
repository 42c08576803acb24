"""What specs use to talk to the implementation and judge its answers.

``Impl`` wraps an adapter so that a missing verb, an exception or a wrong return type
becomes a failed spec with a readable message (never a crashed run), and records every
call so a failure message carries a runnable reproduction snippet: each input is a
full-precision NumPy literal passed through the adapter's ``asarray``, each result a
variable later calls refer to.
``check_close`` compares shape and dtype exactly, then values within the tolerance table.
"""

from __future__ import annotations

import base64
import zlib
from dataclasses import dataclass, field
from typing import Any, NoReturn

import numpy as np
import pytest

from conformance.grading.client import RemoteError, WorkerLost
from conformance.repro import style_for

__all__ = [
    "BROKEN_ERRORS",
    "TOLERANCES",
    "Impl",
    "check",
    "check_close",
    "check_equal",
    "fail",
]

#: (rtol, atol) by dtype, for values and for gradients. Values use torch.testing's
#: assert_close defaults; gradients allow for the longer chains of rounding behind them.
TOLERANCES: dict[str, dict[str, tuple[float, float]]] = {
    "float32": {"value": (1.3e-6, 1e-5), "grad": (1e-5, 1e-6)},
    "float64": {"value": (1e-10, 1e-12), "grad": (1e-9, 1e-12)},
}

#: Exceptions that mean "not implemented or broken", never "rejected the bad input".
BROKEN_ERRORS: tuple[type[BaseException], ...] = (
    NotImplementedError,
    NameError,
    ImportError,
    AttributeError,
    SyntaxError,
    RecursionError,
)

#: Arrays with more elements than this are written compressed in reproduction snippets.
LITERAL_LIMIT = 4096
#: Marks a large array's place in a recorded call until a snippet prints it.
_DEFERRED = "\x00"


def fail(message: str) -> NoReturn:
    pytest.fail(message, pytrace=False)


def _kind(x: Any) -> str:
    """What the implementation returned, by its own type's name (a handle says its kind)."""
    return str(getattr(x, "kind", None) or type(x).__name__)


def _type_name(exc: BaseException) -> str:
    return str(getattr(exc, "type_name", None) or type(exc).__name__)


def _is_broken(exc: BaseException) -> bool:
    """An error meaning "not implemented or broken" (``BROKEN_ERRORS``), in the worker too."""
    names = {c.__name__ for c in BROKEN_ERRORS}
    mro = getattr(exc, "mro", None) or [c.__name__ for c in type(exc).__mro__]
    return bool(names & set(mro))


def _raised(verb: str, exc: BaseException) -> str:
    if isinstance(exc, WorkerLost):
        return f"{verb}(...): {exc}"
    text = f"{verb}(...) raised {_type_name(exc)}: {exc}"
    if isinstance(exc, RemoteError) and exc.ends_the_process:
        text += " (the implementation must not end or interrupt the process)"
    return text


def _array_literal(x: np.ndarray) -> str:
    dtype = str(x.dtype)
    if x.size <= LITERAL_LIMIT:
        # tolist() gives Python scalars; their repr round-trips exactly (full precision)
        return f"np.array({x.tolist()!r}, dtype={dtype!r})"
    flat = x.reshape(-1)
    if bool(np.all(flat == flat[0])):
        return f"np.full({x.shape!r}, {flat[0].item()!r}, dtype={dtype!r})"
    if np.array_equal(flat, np.arange(x.size)):
        return f"np.arange({x.size}).astype({dtype!r}).reshape({x.shape!r})"
    blob = base64.b64encode(zlib.compress(np.ascontiguousarray(x).tobytes(), 9)).decode()
    if len(blob) > 50_000:
        return f"None  # a {x.shape} {dtype} array too large to print: see the spec's source"
    return (
        f"np.frombuffer(zlib.decompress(base64.b64decode({blob!r})), dtype={dtype!r})"
        f".reshape({x.shape!r})"
    )


@dataclass
class _Call:
    line: str  # as the adapter's verb (``out3 = impl.relu(...)``), for the call graph
    uses: set[str]
    result: str | None = None  # the variable holding the result, if printable
    verb: str = ""
    args: list[str] = field(default_factory=list)
    kwargs: dict[str, str] = field(default_factory=dict)
    var: str | None = None  # None: a must-raise call, whose result is not kept
    many: bool = False  # the result is a list or tuple (printed as is, in the book's terms)


@dataclass
class Impl:
    """The implementation under test, as specs see it."""

    adapter: Any
    spec: str  # how it was selected (--impl), for the reproduction snippet
    dtype: str
    device: str
    calls: list[_Call] = field(default_factory=list)
    names: dict[int, str] = field(default_factory=dict)
    held: list[Any] = field(default_factory=list)  # keeps ids in ``names`` valid
    succeeded: set[str] = field(default_factory=set)
    sources: dict[int, str] = field(default_factory=dict)  # code that rebuilds a big input
    # big inputs as the call saw them, printed (compressed) only if a snippet is asked for:
    # a passing spec never pays for it (MNIST's 6,000 images took 2 s to compress)
    deferred: list[np.ndarray] = field(default_factory=list)

    # -- capabilities ---------------------------------------------------------------------
    def claims(self, capability: str) -> bool:
        return capability in self.adapter.capabilities

    @property
    def verbs(self) -> list[str]:
        """The verbs this spec called, in order, without the conversions (for the report)."""
        seen: list[str] = []
        for c in self.calls:
            verb = c.line.split("impl.", 1)[1].split("(", 1)[0]
            if verb not in ("asarray", "to_numpy") and verb not in seen:
                seen.append(verb)
        return seen

    # -- the call log and the reproduction snippet -----------------------------------------
    def _render(self, x: Any, uses: set[str]) -> str:
        name = self.names.get(id(x))
        if name is not None:
            uses.add(name.split("[")[0])
            return name
        if isinstance(x, np.ndarray):
            if id(x) in self.sources:
                return self.sources[id(x)]
            if x.size <= LITERAL_LIMIT:
                return _array_literal(x)
            self.deferred.append(x.copy())  # a copy: the spec may change x later
            return f"{_DEFERRED}{len(self.deferred) - 1}{_DEFERRED}"
        if isinstance(x, np.generic):
            return f"np.{type(x).__name__}({x.item()!r})"
        if isinstance(x, slice):
            parts = (self._render(v, uses) for v in (x.start, x.stop, x.step))
            return f"slice({', '.join(parts)})"
        if isinstance(x, tuple):
            inner = ", ".join(self._render(v, uses) for v in x)
            return f"({inner},)" if len(x) == 1 else f"({inner})"
        if isinstance(x, list):
            return "[" + ", ".join(self._render(v, uses) for v in x) + "]"
        if callable(x) and "<" not in getattr(x, "__qualname__", "<"):
            module = getattr(x, "__module__", None)
            return f"__import__({module!r}, fromlist=['_']).{x.__qualname__}"
        return repr(x)

    def _name(self, value: Any, name: str) -> None:
        if value is None or isinstance(value, (bool, int, float, str)):
            return
        self.names[id(value)] = name
        self.held.append(value)
        if isinstance(value, (list, tuple)):
            for i, v in enumerate(value):
                self._name(v, f"{name}[{i}]")

    def _record(self, verb: str, args: tuple[Any, ...], kwargs: dict[str, Any], note: str) -> str:
        uses: set[str] = set()
        rendered = [self._render(a, uses) for a in args]
        named = {k: self._render(v, uses) for k, v in kwargs.items()}
        shown = ", ".join([*rendered, *(f"{k}={v}" for k, v in named.items())])
        var = f"out{len(self.calls)}"
        prefix = "" if note else f"{var} = "
        line = f"{prefix}impl.{verb}({shown}){note}"
        self.calls.append(_Call(line, uses, None, verb, rendered, named, None if note else var))
        return var

    def repro(self) -> str:
        """Runnable Python reproducing the last calls (with the calls they depend on)."""
        chosen: set[int] = set()
        seeds = [
            i for i, c in enumerate(self.calls) if not c.line.split("(")[0].endswith("asarray")
        ]
        todo = seeds[-3:] or list(range(len(self.calls)))[-1:]
        while todo:
            i = todo.pop()
            if i in chosen:
                continue
            chosen.add(i)
            for name in self.calls[i].uses:
                # the call that made ``name``, and every earlier call given it (it may mutate it)
                for j in range(i):
                    made = self.calls[j].line.startswith(f"{name} = ")
                    if made or name in self.calls[j].uses:
                        todo.append(j)
        style = style_for(self.spec, getattr(self.adapter, "name", ""))
        lines = style.preamble()
        picked = sorted(chosen)
        for i in picked:
            c = self.calls[i]
            lines += style.call(c.verb, c.args, c.kwargs, c.var)
            if not c.var:
                lines[-1] += "  # must raise"
        results = [
            c.result
            for c in (self.calls[i] for i in picked if i in seeds)
            if c.result and (style.kind == "book" or not c.many)
        ]
        lines += [style.show(r) for r in results[-3:]]
        return "reproduce with:\n    " + "\n    ".join(self._literal(x) for x in lines)

    def _literal(self, line: str) -> str:
        """``line`` with its deferred arrays printed."""
        if _DEFERRED not in line:
            return line
        parts = line.split(_DEFERRED)  # text, index, text, index, ..., text
        for k in range(1, len(parts), 2):
            parts[k] = _array_literal(self.deferred[int(parts[k])])
        return "".join(parts)

    # -- calling verbs ----------------------------------------------------------------------
    def call(self, verb: str, *args: Any, **kwargs: Any) -> Any:
        fn = getattr(self.adapter, verb, None)
        var = self._record(verb, args, kwargs, "")
        if fn is None or not callable(fn):
            fail(
                f"the adapter {self.adapter.name!r} lacks the verb {verb!r} "
                "(see conformance/README.md for its signature)"
            )
        try:
            out = fn(*args, **kwargs)
        except Exception as exc:  # the implementation's own error is a failed spec
            error = exc
        else:
            self.succeeded.add(verb)
            self._name(out, var)
            if out is not None and not isinstance(out, str):
                self.calls[-1].result = var
                self.calls[-1].many = isinstance(out, (list, tuple))
            return out
        fail(f"{_raised(verb, error)}\n{self.repro()}")

    def arr(self, x: Any, dtype: str | None = None, source: str | None = None) -> Any:
        """NumPy -> the implementation's array; float inputs take the suite's dtype.

        ``source`` is NumPy code rebuilding a large ``x`` exactly, for the snippet.
        """
        a = np.asarray(x)
        if dtype is None and a.dtype.kind == "f":
            dtype = self.dtype
        a = a.astype(dtype) if dtype else a
        if source is not None:
            self.sources[id(a)] = f"({source}).astype({str(a.dtype)!r})"
            self.held.append(a)
        return self.call("asarray", a, dtype)

    def to_np(self, value: Any, what: str = "the result") -> np.ndarray:
        """The implementation's array -> NumPy, failing readably on a wrong type."""
        if value is None:  # a missing return, not "an array of shape ()" of dtype object
            fail(f"{what} is None, not an array (a missing return?)\n{self.repro()}")
        error: Exception | None = None
        try:
            out = self.adapter.to_numpy(value)
        except Exception as exc:
            error = exc
        if error is not None:
            raised = _raised(f"to_numpy({what})", error)
            fail(f"{raised}; {what} was a {_kind(value)}\n{self.repro()}")
        if not isinstance(out, np.ndarray):
            fail(f"to_numpy({what}) returned {_kind(out)}, not numpy.ndarray\n{self.repro()}")
        if out.dtype.kind not in "biufc":
            fail(
                f"{what} is a {_kind(value)}, which converts to an array of dtype "
                f"{out.dtype}, not numbers: wrong return type\n{self.repro()}"
            )
        return out

    def run(self, verb: str, *args: Any, **kwargs: Any) -> np.ndarray:
        """Call a verb whose result is one array; return it as NumPy."""
        return self.to_np(self.call(verb, *args, **kwargs), f"the result of {verb}")

    def run_many(self, verb: str, *args: Any, **kwargs: Any) -> list[np.ndarray]:
        out = self.call(verb, *args, **kwargs)
        if not isinstance(out, (list, tuple)):
            fail(f"{verb} must return a list or tuple, got {_kind(out)}\n{self.repro()}")
        return [self.to_np(v, f"item {i} of {verb}'s result") for i, v in enumerate(out)]

    def scalar(self, verb: str, *args: Any, **kwargs: Any) -> float:
        out = self.call(verb, *args, **kwargs)
        try:
            return (
                float(out) if isinstance(out, (int, float)) else float(self.adapter.to_numpy(out))
            )
        except WorkerLost as exc:
            fail(f"{_raised(verb, exc)}\n{self.repro()}")
        except Exception as exc:
            error = exc
        fail(f"{verb} must return a number, got {_kind(out)} ({error})\n{self.repro()}")

    def check_unwritten(self, arrays: list[np.ndarray], name: str) -> None:
        """The spec's own ``arrays`` (named ``name[i]``), given to the implementation, must
        not have been written into by it.

        In-process, an array the spec gives is the spec's own object: what the implementation
        writes into it (a model that keeps the caller's weight arrays, so that training
        writes into them), the spec sees when it reads the array again. Over the wire the
        grader's arrays are never written from the worker: the worker says which it wrote
        into (``Connection.written``), and the spec fails here where, in-process, it would
        have read a changed array. An adapter in this process (no ``written_into``) is left
        to the spec's own reads."""
        ask = getattr(self.adapter, "written_into", None)
        if ask is None:
            return
        try:
            where = ask(list(arrays))
        except (RemoteError, WorkerLost) as exc:
            fail(f"{_raised('asking which arrays were written', exc)}\n{self.repro()}")
        hit = [f"{name}[{i}] ({w})" for i, w in enumerate(where) if w]
        if hit:
            fail(
                f"the implementation wrote into {' and '.join(hit)}: the caller's own "
                "arrays, which in-process the caller would see change (does the model keep "
                "the weight arrays it is given, so that training writes into them? keep a "
                f"copy: np.array(w))\n{self.repro()}"
            )

    def rejects(self, verb: str, *args: Any, **kwargs: Any) -> BaseException:
        """The verb must raise on this invalid input, where it succeeded on valid input.

        Call the verb on valid input first, in the same spec (``run``/``call``): a verb
        that raises on everything rejects nothing. Exceptions meaning "not implemented or
        broken" (``BROKEN_ERRORS``) do not count as rejecting; any other type does, since
        libraries differ (the book's loops use assert, torch raises RuntimeError, ...).
        """
        if verb not in self.succeeded:
            fail(
                f"suite error: a rejection spec must first see {verb} succeed on valid input "
                "in the same spec"
            )
        fn = getattr(self.adapter, verb, None)
        self._record(verb, args, kwargs, "  # must raise")
        line = self.calls[-1].line.removesuffix("  # must raise")
        nth = sum(1 for c in self.calls if c.line.endswith("# must raise"))
        if fn is None:
            fail(f"the adapter {self.adapter.name!r} lacks the verb {verb!r}")
        try:
            out = fn(*args, **kwargs)
        except WorkerLost as exc:
            fail(f"{_raised(verb, exc)}\n{self.repro()}")
        except Exception as exc:
            if not _is_broken(exc) and not getattr(exc, "ends_the_process", False):
                return exc
            fail(
                f"{verb} raised {_type_name(exc)}: {exc} on invalid input; that means "
                "not implemented or broken, not a rejection (raise ValueError, TypeError, "
                f"or your library's error)\n{self.repro()}"
            )
        call = self._literal(line)
        shown = call if len(call) <= 300 else call[:297] + "..."
        fail(
            f"{verb} accepted invalid input (must-raise call {nth} of this spec: {shown}) and "
            f"returned {self._describe(out)}; it must raise\n{self.repro()}"
        )

    def _describe(self, out: Any) -> str:
        """What a verb returned, in words: None, a tuple of n items, an array of shape s."""
        if out is None:
            return "None"
        if isinstance(out, (tuple, list)):
            return f"a {type(out).__name__} of {len(out)} item(s)"
        try:
            arr = self.adapter.to_numpy(out)
        except Exception:
            return f"a {_kind(out)}"
        if not isinstance(arr, np.ndarray):
            return f"a {_kind(out)}"
        return f"an array of shape {arr.shape} and dtype {arr.dtype}"


def _where(idx: tuple[Any, ...]) -> str:
    return "[" + ", ".join(str(int(i)) for i in idx) + "]"


def accuracy_atol(impl: Impl, n: int) -> float:
    """How far an accuracy k/n may be from exact: 1e-12 in a float64 grade; in a float32
    grade a float32 mean (the book's ``ops.mean(matches)``: 0.99 is 0.99000001), still far
    below 1/n, so a miscounted sample always fails."""
    return 1e-12 if impl.dtype == "float64" else min(1e-6, 0.1 / n)


def loop_dtype(impl: Impl, actual: np.ndarray) -> str | None:
    """The dtype a naive loop's result may have: the grade's, or float64 in a float32 grade
    (§2.3: the book's loops fill ``np.zeros`` buffers, float64 whatever their input)."""
    if impl.dtype == "float32" and str(getattr(actual, "dtype", "")) == "float64":
        return "float64"
    return None


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
