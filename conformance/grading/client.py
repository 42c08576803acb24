"""The grader's side of the wire: the submission's adapter as a proxy, its worker supervised.

``Connection`` starts the worker (``sandbox.WorkerProcess``), reads its metadata, sends
requests and waits for replies *from outside*: a reply later than the spec's deadline, a
worker that dies, or a reply that breaks the protocol (malformed, oversized) fails the spec
being served with a ``WorkerLost`` message, and the next request starts a fresh worker, up
to ``max_restarts`` times. ``RemoteAdapter`` has the adapter's attributes and verbs; what a
verb returns comes back as plain data or as ``RemoteValue`` handles. Nothing here imports,
unpickles or evaluates what the submission sends.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
import time
import types
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from conformance.adapter import BUILTIN, AdapterLoadError, validate_metadata
from conformance.grading import wire
from conformance.grading.cells import MNIST_ARRAYS, SERVED_MNIST
from conformance.grading.frameworks import detect_imports, resolve_packages
from conformance.grading.notebook import notebook_cells
from conformance.grading.sandbox import (
    RUNTIME_FILES,
    Isolation,
    Limits,
    WorkerProcess,
    isolation_for,
)

__all__ = [
    "AdapterMeta",
    "Connection",
    "RemoteAdapter",
    "RemoteError",
    "RemoteValue",
    "WorkerLost",
    "probe",
]

#: Seconds a worker may take to import the submission and say hello.
START_TIMEOUT = 120.0
#: The largest reply accepted from a worker, in bytes.
MAX_REPLY_BYTES = 1 << 30
_LOG_TAIL = 600


class WorkerLost(Exception):
    """The worker timed out, died or broke the protocol while serving a spec."""

    def __init__(self, message: str, *, stop: bool = False) -> None:
        super().__init__(message)
        self.stop = stop  # no restarts left: the grade ends here


class RemoteError(Exception):
    """An exception the implementation raised in the worker, by name and message."""

    def __init__(self, type_name: str, mro: list[str], message: str) -> None:
        super().__init__(message)
        self.type_name = type_name
        self.mro = mro

    @property
    def ends_the_process(self) -> bool:
        """SystemExit, KeyboardInterrupt: BaseExceptions that are not Exceptions."""
        return "Exception" not in self.mro


class RemoteValue:
    """An object that stays in the worker (an array, a tensor, a model)."""

    def __init__(self, conn: Connection, handle: wire.Handle) -> None:
        self.conn, self.handle, self.generation = conn, handle, conn.generation

    @property
    def kind(self) -> str:
        return self.handle.kind

    def __float__(self) -> float:
        out = self.conn.request({"op": "float", "value": self.conn.encode(self)})
        if type(out) is not float:
            raise TypeError(f"float() of a {self.kind} gave a {type(out).__name__}")
        return out

    def __repr__(self) -> str:
        return f"<{self.kind} in the worker>"


def is_trusted(spec: str) -> bool:
    """A built-in adapter, or a module of this suite (its mutants): the project's own code."""
    return spec in BUILTIN or BUILTIN.get(spec, spec).startswith("conformance.")


def plan(spec: str, *, packages: list[str], hide: list[str], limits: Limits,
         cwd: str, folder: str | None = None) -> tuple[str, Isolation, list[str]]:  # fmt: skip
    """(what the worker loads, how it is fenced in, folders it imports from) for ``spec``.

    A file is made absolute (and its folder hidden: the worker gets a copy); a third party's
    module is imported from ``cwd``, which then stays visible. The frameworks a submission
    imports are allowed to its worker (``frameworks``), with no flag."""
    target = BUILTIN.get(spec, spec)
    path, sep, attr = target.partition(":")
    trusted, paths = is_trusted(spec), []
    hide = list(hide)
    if path.endswith((".py", ".ipynb")):
        file = Path(cwd, path).resolve()
        if not file.is_file():
            raise AdapterLoadError(f"adapter file {file} does not exist")
        target = str(file) + sep + attr
        hide += [cwd, str(file.parent)]
        packages = _worker_packages(packages, Path(folder) if folder else file, trusted)
    elif not trusted:
        paths.append(cwd)
        packages = _worker_packages(packages, None, trusted)
    iso = isolation_for(trusted, packages=packages, hide=[] if trusted else hide, limits=limits)
    return target, iso, paths


def _worker_packages(packages: list[str], source: Path | None, trusted: bool) -> list[str]:
    """``packages`` (import or distribution names) and the frameworks ``source`` imports,
    as installed distributions; an unknown name is a usage error."""
    if trusted:
        return packages
    try:
        return resolve_packages(packages, detect_imports(source) if source else [])
    except ValueError as exc:
        raise AdapterLoadError(str(exc)) from None


def make_runtime(folder: Path) -> Path:
    """Copy what a worker runs of ours into ``folder`` (readable by anyone, owned by us)."""
    folder.mkdir(mode=0o755, parents=True, exist_ok=True)
    (folder.parent / "view").mkdir(mode=0o755, exist_ok=True)  # where a worker's view is built
    for f in (*RUNTIME_FILES, Path(__file__).with_name("launch.py")):
        shutil.copyfile(f, folder / f.name)
        os.chmod(folder / f.name, 0o644)
    os.chmod(folder, 0o755)
    return folder


class Connection:
    """One submission's worker, restarted after a crash or a timeout."""

    def __init__(
        self,
        target: str,
        iso: Isolation,
        grade_dir: Path,
        *,
        max_restarts: int = 10,
        folder: Path | None = None,
        paths: list[str] | None = None,
    ) -> None:
        self.paths = list(paths or [])
        self.notes: list[str] = []  # what a notebook lost on its way to a .py file
        self.target, self.iso, self.grade_dir = target, iso, grade_dir
        self.folder = folder  # a folder submission: copied whole, on the import path
        self.max_restarts = max_restarts
        self.restarts = 0
        self.generation = 0
        self.deadline: float | None = None  # time.monotonic() by which a reply must come
        self.timeout_text = ""
        self.worker: WorkerProcess | None = None
        self.meta: dict[str, Any] = {}
        self.runtime = make_runtime(grade_dir / "runtime")
        self.log_path = grade_dir / "worker.log"
        self.log_start = 0
        self.sent = wire.Sent()  # this spec's arrays: one object each in the worker
        self.calls = 0  # verbs called in this spec

    # -- lifecycle ------------------------------------------------------------------------
    def _scratch(self) -> Path:
        scratch = Path(tempfile.mkdtemp(prefix="scratch-", dir=self.grade_dir))
        if self.iso.uid is not None:
            os.chown(scratch, self.iso.uid, self.iso.gid or self.iso.uid)
        return scratch

    def start(self, deadline: float | None = None) -> dict[str, Any]:
        """Start a worker; return its metadata (raise AdapterLoadError if it cannot load)."""
        self.close()
        self.sent.clear()  # a fresh worker holds none of them
        scratch = self._scratch()
        target = self._place_submission(scratch)
        with open(self.log_path, "ab") as log:
            self.log_start = log.tell()
            if self.iso.uid is not None:
                os.chmod(self.log_path, 0o600)
            self.worker = WorkerProcess(self.iso, self.runtime, scratch, target, log, self.paths)
        self.generation += 1
        began = time.monotonic()
        until = began + START_TIMEOUT if deadline is None else deadline
        try:
            header, _ = wire.read_message(self.worker.rep_r, deadline=until, max_bytes=1 << 24)
        except TimeoutError:
            self.close()
            raise AdapterLoadError(
                f"loading the adapter took longer than its limit of {until - began:.0f} s "
                "(importing the submission and reading its ADAPTER; does it hang at import?)"
            ) from None
        except (EOFError, wire.WireError) as exc:
            why = "ended its process" if isinstance(exc, EOFError) else f"broke the wire ({exc})"
            text = self._ended(why)
            self.close()
            raise AdapterLoadError(f"loading the adapter {text}") from None
        if "load_error" in header:
            self.close()
            raise AdapterLoadError(
                f"importing the adapter raised {str(header['load_error'])[:2000]}"
            )
        try:
            meta = wire.decode(header.get("hello"), [])
        except wire.WireError as exc:
            self.close()
            raise AdapterLoadError(f"the adapter's metadata could not be read: {exc}") from None
        self.meta = meta if isinstance(meta, dict) else {}
        return self.meta

    def _place_submission(self, scratch: Path) -> str:
        """A file submission is copied into the scratch folder (the worker cannot read the
        original's folder); built-in and module adapters are named as they are."""
        path, sep, attr = self.target.partition(":")
        if self.iso.trusted or not path.endswith((".py", ".ipynb")):
            return self.target
        src = Path(path)
        if self.folder is not None:
            dest = scratch / "submission"
            shutil.copytree(self.folder, dest, symlinks=True, ignore=_skip_links)
            copied = dest / src.resolve().relative_to(self.folder.resolve())
        else:
            copied = scratch / src.name
            shutil.copyfile(src, copied)
        _serve_mnist(scratch, copied)
        if copied.suffix == ".ipynb":  # its code cells, run one by one in the worker
            try:
                cells = notebook_cells(copied)
            except ValueError as exc:
                raise AdapterLoadError(str(exc)) from None
            copied = copied.with_suffix(".cells.json")
            copied.write_text(json.dumps(cells))
        if self.iso.uid is not None:
            for d, _dirs, files in os.walk(scratch):
                os.chown(d, self.iso.uid, self.iso.gid or self.iso.uid)
                for f in files:
                    os.chown(os.path.join(d, f), self.iso.uid, self.iso.gid or self.iso.uid)
        return str(copied) + sep + attr

    def _log_tail(self) -> str:
        with contextlib.suppress(OSError), open(self.log_path, "rb") as f:
            f.seek(self.log_start)
            text = f.read()[-_LOG_TAIL:].decode("utf-8", "replace").strip()
            return f"; the last of its output: {text!r}" if text else ""
        return ""

    def _ended(self, why: str) -> str:
        status = "running"
        if self.worker is not None:
            with contextlib.suppress(Exception):
                self.worker.proc.wait(timeout=2)
            status = self.worker.status()
            memory = self.worker.memory_note()
            status += f": {memory}" if memory else ""
        return f"{why} ({status}){self._log_tail()}".replace("  (", " (")

    def close(self) -> None:
        if self.worker is not None:
            self.worker.kill()
            self.worker = None

    # -- requests -------------------------------------------------------------------------
    def encode(self, value: Any) -> Any:
        return self._encode(value, [])

    def _encode(self, value: Any, buffers: list[Any], where: str = "a value") -> Any:
        if self.worker is None:  # restart first: a fresh worker starts a fresh wire.Sent
            self._restart()

        def swap(v: Any, path: str) -> Any:
            if isinstance(v, RemoteValue):
                if v.generation != self.generation:
                    raise WorkerLost(
                        "a value made by an earlier worker (it was restarted after a crash "
                        "or timeout) cannot be used"
                    )
                return v.handle
            if isinstance(v, np.ndarray):  # by identity within the spec (wire.Sent)
                return self.sent.share(v, f"{where}, item {path}" if path else where)
            if isinstance(v, (list, tuple)):
                return type(v)(swap(x, f"{path}[{i}]") for i, x in enumerate(v))
            if isinstance(v, dict):
                return {k: swap(x, f"{path}[{k!r}]") for k, x in v.items()}
            return v

        return wire.encode(swap(value, ""), buffers)

    def written(self, arrays: list[Any]) -> list[str | None]:
        """For each of ``arrays``, where it was given if the worker wrote into it since
        (its first call and argument), else None (unwritten, or never sent this spec).

        The worker's answer is untrusted: it can only say "unwritten" (what a correct
        implementation says: the spec's expected values stay the grader's own) or fail the
        spec; see ``wire.Sent``."""
        entries = self.sent.tokens(arrays)
        asked = [e.token for e in entries if e is not None]
        if not asked:
            return [None] * len(arrays)
        answer = self.request({"op": "written", "tokens": asked})
        if type(answer) is not list or len(answer) != len(asked):
            self._lost("the worker broke the protocol: a malformed answer to 'written'")
        if not all(type(b) is bool for b in answer):
            self._lost("the worker broke the protocol: a malformed answer to 'written'")
        said = dict(zip(asked, answer, strict=True))
        return [e.where if e is not None and said[e.token] else None for e in entries]

    def request(self, header: dict[str, Any], buffers: list[Any] | None = None) -> Any:
        """Send one request; return the decoded ``ok`` value or raise RemoteError/WorkerLost."""
        worker = self.worker or self._restart()
        try:
            wire.write_message(worker.req_w, header, buffers or [])
            reply, bufs = wire.read_message(
                worker.rep_r, deadline=self.deadline, max_bytes=MAX_REPLY_BYTES
            )
            if "err" in reply:
                err = reply["err"]
                raise RemoteError(str(err.get("type"))[:200], [str(m) for m in err.get("mro", [])],
                                  str(err.get("message"))[:8000])  # fmt: skip
            if "nonnumeric" in reply:  # to_numpy gave strings or objects: no data comes back
                text = str(reply["nonnumeric"])
                kind = text if re.fullmatch(r"[<>|=]?[US][0-9]{0,6}", text) else "|O"
                return np.empty(0, dtype=np.dtype(kind))
            if "ok" not in reply:
                raise wire.WireError("a reply with neither ok nor err")
            return wire.decode(reply["ok"], bufs, resolve=self._value)
        except TimeoutError:
            self._lost(f"timed out: no reply within {self.timeout_text or 'the deadline'}")
        except (EOFError, BrokenPipeError):
            self._lost(f"the worker process running the submission died {self._ended('')}")
        except wire.WireError as exc:
            self._lost(f"the worker broke the protocol: {exc}")
        raise AssertionError("unreachable")  # pragma: no cover

    def _value(self, hid: int, kind: str) -> RemoteValue:
        return RemoteValue(self, wire.Handle(hid, kind[:100]))

    def _restart(self) -> WorkerProcess:
        if self.restarts > self.max_restarts:
            raise WorkerLost(
                f"worker restarts used up: the worker was lost {self.restarts} times, at most "
                f"{self.max_restarts} restarts allowed", stop=True)  # fmt: skip
        try:
            self.start()
        except AdapterLoadError as exc:
            raise WorkerLost(f"the worker could not be restarted: {exc}") from None
        if self.worker is None:  # start() sets it or raises
            raise WorkerLost("the worker could not be restarted")
        return self.worker

    def _lost(self, message: str) -> None:
        self.close()
        self.restarts += 1
        stop = self.restarts > self.max_restarts
        suffix = "; the grade stops here" if stop else "; grading goes on in a fresh worker"
        raise WorkerLost(message + suffix, stop=stop)

    def release(self) -> None:
        """Drop the worker's handles and the arrays it was sent (between specs); a dead
        worker is left for later."""
        self.sent.clear()
        self.calls = 0
        if self.worker is not None:
            with contextlib.suppress(WorkerLost, RemoteError):
                self.request({"op": "release"})


def _serve_mnist(scratch: Path, submission: Path) -> None:
    """Beside a submission that mentions MNIST, the grader's verified copy as .npy files
    (``conformance.data``: ``$DL_CH2_DATA`` or the per-user cache, md5-checked here, by the
    grader) for its worker to serve to ``mnist.load_data()`` and torchvision's ``MNIST``
    (``cells``); with no copy, or a copy that fails its check, none: the worker serves
    stand-in data."""
    if "mnist" not in submission.read_text(encoding="utf-8", errors="replace").lower():
        return
    from conformance import data

    try:
        loaded = data.load()
    except ValueError:  # an md5 mismatch: never served
        return
    if loaded is None:
        return
    folder = scratch / SERVED_MNIST
    folder.mkdir(mode=0o755)
    for name, array in zip(MNIST_ARRAYS, [*loaded[0], *loaded[1]], strict=True):
        np.save(folder / f"{name}.npy", array, allow_pickle=False)


def _skip_links(folder: str, names: list[str]) -> list[str]:
    """Symlinks are left behind: a link could point at another student's work."""
    return [n for n in names if os.path.islink(os.path.join(folder, n))]


class RemoteAdapter:
    """The submission's adapter as the specs see it: attributes and verbs, no code of its own."""

    def __init__(self, conn: Connection, meta: dict[str, Any], target: str) -> None:
        self._conn = conn
        ns = types.SimpleNamespace(**{k: meta[k] for k in meta if k in _META_KEYS})
        validate_metadata(ns, target)
        self.name: str = ns.name
        self.version: str = ns.version
        self.devices = tuple(ns.devices)
        self.dtypes = tuple(ns.dtypes)
        self.capabilities = frozenset(ns.capabilities)
        libs = getattr(ns, "library_versions", None) or {}
        self.library_versions = {str(k): str(v)[:200] for k, v in libs.items()}
        self.expectations_text: str | None = meta.get("expectations")
        self.expectations_error: str | None = meta.get("expectations_error")
        self._verbs = {v for v in meta.get("verbs", []) if isinstance(v, str)}

    def __getattr__(self, verb: str) -> Any:
        if verb.startswith("_") or verb not in self.__dict__.get("_verbs", ()):
            raise AttributeError(verb)
        return _Verb(self._conn, verb)

    def to_numpy(self, value: Any) -> Any:
        buffers: list[Any] = []
        data = self._conn._encode(value, buffers, "the argument of to_numpy")
        return self._conn.request({"op": "to_numpy", "value": data}, buffers)

    def written_into(self, arrays: list[Any]) -> list[str | None]:
        """Which of the spec's ``arrays`` the implementation wrote into (``Connection.written``)."""
        return self._conn.written(list(arrays))


_META_KEYS = ("name", "version", "devices", "dtypes", "capabilities", "library_versions")


class _Verb:
    def __init__(self, conn: Connection, verb: str) -> None:
        self.conn, self.verb = conn, verb

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        buffers: list[Any] = []
        self.conn.calls += 1
        call = f"call {self.conn.calls} of the spec, {self.verb}"
        header = {
            "op": "call",
            "verb": self.verb,
            "args": [
                self.conn._encode(a, buffers, f"argument {i + 1} of {call}")
                for i, a in enumerate(args)
            ],
            "kwargs": self.conn._encode(dict(kwargs), buffers, f"a keyword of {call}"),
        }
        return self.conn.request(header, buffers)


@dataclass
class AdapterMeta:
    """A validated adapter's descriptive attributes: what the grading process needs."""

    name: str
    version: str
    devices: list[str]
    dtypes: list[str]
    capabilities: list[str]
    library_versions: dict[str, str] = field(default_factory=dict)
    expectations: str | None = None  # the text of the adapter's own expectations file
    expectations_error: str | None = None

    @classmethod
    def of(cls, adapter: RemoteAdapter) -> AdapterMeta:
        return cls(
            name=adapter.name,
            version=adapter.version,
            devices=list(adapter.devices),
            dtypes=list(adapter.dtypes),
            capabilities=sorted(adapter.capabilities),
            library_versions=dict(adapter.library_versions),
            expectations=adapter.expectations_text,
            expectations_error=adapter.expectations_error,
        )

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> AdapterMeta:
        return cls(**json.loads(text))


def probe(target: str, iso: Isolation, grade_dir: Path, *, timeout: float = START_TIMEOUT,
          folder: Path | None = None, paths: list[str] | None = None) -> AdapterMeta:  # fmt: skip
    """Load the adapter in a worker, validate its metadata, end the worker.

    Raises AdapterLoadError naming the bad attribute, or saying why it did not load."""
    conn = Connection(target, iso, grade_dir, folder=folder, paths=paths)
    try:
        meta = conn.start(time.monotonic() + timeout)
        return AdapterMeta.of(RemoteAdapter(conn, meta, target))
    finally:
        conn.close()
