"""How a worker process is started, fenced in and ended.

Two levels, chosen by who runs the grader:

- **as root** (Gradescope, a container, CI) the submission's worker runs as an unprivileged
  uid/gid with no supplementary groups (a spare uid from 61000 up, one per concurrent grade,
  or ``$DL_CH2_WORKER_UID``), from a fresh scratch
  folder it owns, with a scrubbed environment and hard resource limits (CPU seconds, open
  files, processes, file size, data memory). Where the kernel allows (``unshare``), it also
  gets a network namespace with no interface but a down loopback, a PID namespace (it sees
  only its own processes, and when the worker's first process ends the kernel kills every
  process left in it, double-forked daemons included) and a mount namespace in which the
  grader's packages, the answers, the submissions folder and the results are covered by
  empty tmpfs mounts. The interpreter runs isolated (``-I -S``), its imports limited to the
  standard library, a copy of the assignment's allowed libraries (``worker_site``) and the
  submission's own folder. Ending a grade kills the namespace and then every process of the
  worker's uid.
- **not root** (a TA's laptop), or ``DL_CH2_ISOLATION=process`` (the project's tests of
  adapters built on the reference), the worker is still its own process, in its own
  session, with the same limits, but with the grader's own rights: it could read and write
  the grader's files. The report says so (``Isolation.summary``).

Built-in adapters (numpy, torch-cpu, torch-cuda) are the project's own code: they run in a
worker over the same wire, as the grader's user, with the grader's interpreter and paths.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata as md
import importlib.util
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Isolation", "Limits", "WorkerProcess", "isolation_for", "worker_site"]

_HERE = Path(__file__).resolve().parent
_SUITE = _HERE.parent
#: Files copied into each grade's runtime folder: all a worker runs of ours.
RUNTIME_FILES = (
    _HERE / "worker.py",
    _HERE / "wire.py",
    _SUITE / "curves.py",
    _HERE / "book_names.py",
    _HERE / "cells.py",
)
_UNSHARE = [
    "unshare",
    "--net",
    "--ipc",
    "--pid",
    "--fork",
    "--kill-child",
    "--mount",
    "--mount-proc",
]


@dataclass(frozen=True)
class Limits:
    """Hard resource limits of a worker (0: none)."""

    cpu_s: int = 1800
    memory_bytes: int = 8 * 2**30
    nofile: int = 1024
    nproc: int = 512  # threads count: torch starts one per core
    fsize_bytes: int = 2**30

    def rlimits(self) -> dict[str, int]:
        table = {
            "RLIMIT_CPU": self.cpu_s,
            "RLIMIT_DATA": self.memory_bytes,
            "RLIMIT_NOFILE": self.nofile,
            "RLIMIT_NPROC": self.nproc,
            "RLIMIT_FSIZE": self.fsize_bytes,
            "RLIMIT_CORE": 0,
        }
        return {k: v for k, v in table.items() if v > 0 or k == "RLIMIT_CORE"}


@dataclass
class Isolation:
    """What fences a worker in; ``summary`` is what the report says."""

    trusted: bool  # a built-in adapter: the project's own code
    uid: int | None = None  # None: the grader's own user
    gid: int | None = None
    namespaces: bool = False
    python: str = sys.executable
    site: list[str] = field(default_factory=list)
    hide: list[str] = field(default_factory=list)
    limits: Limits = field(default_factory=Limits)
    note: str = ""
    #: what caps the worker's memory, shared memory included: "cgroup" or "watchdog"
    memory_cap: str = "watchdog"
    binds: list[list[str]] = field(default_factory=list)  # [installed, mount point], read-only

    @property
    def privileged_grader(self) -> bool:
        return self.uid is not None

    def summary(self) -> dict[str, Any]:
        if self.trusted:
            level = (
                "built-in adapter: the project's own code, in a worker process as the grader's user"
            )
        elif self.uid is not None:
            level = f"unprivileged: uid {self.uid}, gid {self.gid}, no groups"
        else:
            level = (
                "NOT ISOLATED FROM YOUR FILES: the submission ran in its own process but with "
                "the grader's own rights (it could read or change your files and the answers). "
                "For full isolation grade as root in a container, e.g. docker run --rm --cap-add "
                "SYS_ADMIN --security-opt seccomp=unconfined -v $PWD:/work IMAGE dl-ch2 grade "
                "/work/adapter.py (see conformance/README.md, threat model)"
            )
        return {
            "worker": "a separate process serving the adapter over a pipe (plain data only)",
            "level": level,
            "namespaces": (
                "network, PID and mount (answers and results hidden)"
                if self.namespaces
                else f"none{': ' + self.note if self.note else ''}"
            ),
            "limits": self.limits.rlimits(),
            "memory_cap": {"bytes": self.limits.memory_bytes, "mechanism": self.memory_text()},
        }

    def memory_text(self) -> str:
        if self.limits.memory_bytes <= 0 or self.trusted:
            return "none"
        if self.memory_cap == "cgroup":
            parent = memory_cgroup_parent()
            version = parent[1] if parent else 1
            knob = "memory.max" if version == 2 else "memory.limit_in_bytes"
            how = f"cgroup v{version} {knob}"
        else:
            how = f"the grader's watchdog, every {WATCHDOG_PERIOD:g} s"
        return f"{how}: private and shared memory; RLIMIT_DATA: private"


def _runnable_by_others(path: str) -> bool:
    p = Path(os.path.realpath(path))
    if not p.is_file() or not p.stat().st_mode & stat.S_IXOTH:
        return False
    return all(d.stat().st_mode & stat.S_IXOTH for d in p.parents)


def worker_python() -> str:
    """An interpreter of this Python version that an unprivileged user can run."""
    given = os.environ.get("DL_CH2_WORKER_PYTHON")
    if given:
        return given
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    candidates = [sys.executable, getattr(sys, "_base_executable", sys.executable)]
    candidates += [f"{d}/{version}" for d in ("/usr/local/bin", "/usr/bin")]
    for c in candidates:
        if c and _runnable_by_others(c) and version in os.path.basename(os.path.realpath(c)):
            return os.path.realpath(c)
    raise RuntimeError(
        f"no {version} that an unprivileged user can run was found (the grader's is "
        f"{sys.executable}); set DL_CH2_WORKER_PYTHON"
    )


def _distribution_closure(names: list[str]) -> list[md.Distribution]:
    seen: dict[str, md.Distribution] = {}
    todo = list(names)
    while todo:
        name = re.sub(r"[-_.]+", "-", todo.pop()).lower()
        if name in seen:
            continue
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            continue
        seen[name] = dist
        for req in dist.requires or []:
            if "extra ==" not in req:
                todo.append(re.split(r"[\s;<>=!~\[(]", req, maxsplit=1)[0])
    return list(seen.values())


def worker_site(packages: list[str], cache: Path | None = None) -> str:
    """A folder holding a copy of ``packages`` (and what they need), readable by anyone.

    The worker imports from it alone, so a submission sees numpy (and torch when the
    assignment uses it) but not the grader's other packages. Cached by content.
    """
    given = os.environ.get("DL_CH2_WORKER_SITE")
    if given:
        return given
    dists = _distribution_closure(packages)
    key = hashlib.sha256(
        json.dumps(sorted(f"{d.metadata['Name']}=={d.version}" for d in dists)).encode()
    ).hexdigest()[:16]
    root = cache or Path(os.environ.get("DL_CH2_WORKER_CACHE", "/var/cache/dl-ch2"))
    root.mkdir(mode=0o755, parents=True, exist_ok=True)
    dest = root / f"dl-ch2-worker-site-{key}"
    if dest.is_dir() and _ours_alone(dest):
        return str(dest)
    if dest.is_dir():  # someone else's, or writable by others: never import from it
        raise RuntimeError(f"{dest} is not this grader's own (owner or mode): remove it")
    tmp = Path(tempfile.mkdtemp(prefix=".dl-ch2-site-", dir=root))
    for dist in dists:
        for f in dist.files or []:
            src = Path(str(dist.locate_file(f)))
            if not src.is_file() or "__pycache__" in f.parts or f.parts[0] == "..":
                continue
            target = tmp / f
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, target)
    from conformance.grading.views import publish  # one way: sandbox -> views

    publish(tmp, dest)
    return str(dest)


def _package_dirs(packages: list[str]) -> list[str]:
    """Where this interpreter imports ``packages`` from (a worker at the process level uses
    the grader's own copies)."""
    dirs: list[str] = []
    for name in packages:
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.origin:
            folder = str(Path(spec.origin).resolve().parents[1])
            if folder not in dirs:
                dirs.append(folder)
    return dirs


def _ours_alone(folder: Path) -> bool:
    """Owned by this process's user and writable by no one else, up to the root."""
    for p in (folder, *folder.parents):
        st = p.stat()
        sticky_tmp = p != folder and st.st_mode & stat.S_ISVTX
        if st.st_uid not in (0, os.geteuid()) or (st.st_mode & 0o022 and not sticky_tmp):
            return False
    return True


def namespaces_work() -> tuple[bool, str]:
    """Whether ``unshare`` can give a worker new network, PID and mount namespaces."""
    if shutil.which("unshare") is None:
        return False, "the unshare command is missing"
    try:
        proc = subprocess.run([*_UNSHARE, "true"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError) as exc:
        return False, f"unshare failed: {exc}"
    if proc.returncode != 0:
        return False, f"the kernel refused unshare: {proc.stderr.strip()[:200]}"
    return True, ""


def hidden_paths(extra: list[str]) -> list[str]:
    """What a worker must not see: the grader's packages, their checkout, and ``extra``."""
    paths = {str(_SUITE)}
    for pkg in ("dl_ch2", "dl_ch2_tools"):
        with contextlib.suppress(ImportError, AttributeError, TypeError):
            spec = importlib.util.find_spec(pkg)
            if spec is not None and spec.origin:
                paths.add(str(Path(spec.origin).parent))
    checkout = _SUITE.parent
    if (checkout / "pyproject.toml").exists():
        paths.add(str(checkout))
    for p in extra:
        if p:
            paths.add(str(Path(p).resolve()))
    return sorted(paths)


def isolation_for(
    trusted: bool, *, packages: list[str], hide: list[str], limits: Limits
) -> Isolation:
    """The strongest isolation this process can give a worker."""
    if trusted:
        return Isolation(trusted=True, limits=limits)
    process = {"trusted": False, "limits": limits, "site": _package_dirs(packages)}
    if os.environ.get("DL_CH2_ISOLATION") == "process":
        return Isolation(**process, note="DL_CH2_ISOLATION=process was set")  # type: ignore[arg-type]
    if os.geteuid() != 0:
        return Isolation(**process, note="the grader is not root")  # type: ignore[arg-type]
    given = os.environ.get("DL_CH2_WORKER_UID")
    uid = lease_uid(int(given) if given else None)
    gid = int(os.environ.get("DL_CH2_WORKER_GID", uid))
    ok, why = namespaces_work()
    cap = "cgroup" if memory_cgroup_parent() is not None else "watchdog"
    if os.environ.get(MEMORY_CAP_ENV) == "cgroup" and cap != "cgroup":
        raise RuntimeError(f"{MEMORY_CAP_ENV}=cgroup but no memory cgroup is usable here")
    site, binds = library_site(packages, bind=ok)
    return Isolation(
        trusted=False,
        uid=uid,
        gid=gid,
        namespaces=ok,
        python=worker_python(),
        site=[site],
        hide=hidden_paths(hide) if ok else [],
        limits=limits,
        note=why,
        memory_cap=cap,
        binds=binds,
    )


def library_site(packages: list[str], *, bind: bool) -> tuple[str, list[list[str]]]:
    """The worker's library folder: in a mount namespace, a view whose packages are bound
    read-only from where they are installed (``views``: no copy of a framework per grade or
    per machine); without one, a copy (``worker_site``)."""
    if os.environ.get("DL_CH2_WORKER_SITE") or not bind:
        return worker_site(packages), []
    from conformance.grading.views import library_view

    root = Path(os.environ.get("DL_CH2_WORKER_CACHE", "/var/cache/dl-ch2"))
    root.mkdir(mode=0o755, parents=True, exist_ok=True)
    site, binds = library_view(_distribution_closure(packages), root)
    if not _ours_alone(Path(site)):  # its binds name what the worker sees: root's file only
        raise RuntimeError(f"{site} is not this grader's own (owner or mode): remove it")
    return site, binds


_LEASES: dict[int, Any] = {}
#: Where concurrent grades take their uids (root only); spare uids have no passwd entry.
LEASE_DIR = Path(os.environ.get("DL_CH2_LEASE_DIR", "/run/dl-ch2-workers"))
SPARE_UIDS = range(61000, 62000)


def lease_uid(preferred: int | None = None) -> int:
    """A worker uid no other grade on this machine is using, held until this process ends.

    Ending a grade kills every process of its uid, so two grades at once (grade-all's jobs,
    parallel test runs) must not share one, and the uid must be no one else's: not nobody,
    which system services may run as, but a spare uid with no passwd entry (61000 up),
    unless ``preferred`` (``$DL_CH2_WORKER_UID``) names a dedicated user."""
    import fcntl

    if _LEASES:
        return next(iter(_LEASES))
    LEASE_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)
    for uid in [preferred, *SPARE_UIDS] if preferred is not None else SPARE_UIDS:
        f = open(LEASE_DIR / f"{uid}.lock", "w")  # noqa: SIM115 - held open: the lease
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.close()
            continue
        _LEASES[uid] = f
        return uid
    raise RuntimeError("no free worker uid: over 1000 grades at once on this machine")


def release_uids() -> None:
    """Give back this process's uid lease (after its last worker has ended)."""
    for f in _LEASES.values():
        f.close()
    _LEASES.clear()


def _child_setup(limits: dict[str, int]) -> None:
    """In the child, before exec: die with the grader (PR_SET_PDEATHSIG), then the limits.
    (With namespaces, unshare's --kill-child passes the death on to the worker.)"""
    import ctypes
    import resource

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)
    for name, value in limits.items():
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(getattr(resource, name), (value, value))


def worker_env(trusted: bool) -> dict[str, str]:
    """A worker's environment where it runs as the grader's user: the grader's, without the
    grade's secret seed (fresh inputs it never sees); NumPy's BLAS on one thread, as in the
    unprivileged worker (``OMP_NUM_THREADS=1``): the chapter's matrices are small (batches of
    128), where a second BLAS thread spins more than it helps, and the pytest process waiting
    on the worker shares the cores (the first example's training: 0.6 s against 1.4 s)."""
    env = {k: v for k, v in os.environ.items() if k != "DL_CH2_GRADE_SECRET"}
    env.setdefault("OPENBLAS_NUM_THREADS", "1")
    if trusted:
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(_SUITE.parent), env.get("PYTHONPATH")) if p
        )
    return env


class WorkerProcess:
    """One running worker: its pipes and how to end it, with everything it started."""

    def __init__(
        self, iso: Isolation, runtime: Path, scratch: Path, target: str, log: Any,
        paths: list[str] | None = None,
    ) -> None:  # fmt: skip
        self.iso = iso
        self.memory_killed = ""  # what the watchdog saw when it killed the worker
        self.cgroup = None
        if iso.uid is not None and iso.memory_cap == "cgroup":
            self.cgroup = make_memory_cgroup(iso.limits.memory_bytes)
        req_r, self.req_w = os.pipe()
        self.rep_r, rep_w = os.pipe()
        fds = ["--in", str(req_r), "--out", str(rep_w), "--adapter", target]
        fds += [a for p in paths or [] for a in ("--path", p)]
        fds += ["--verbs", ",".join(_verb_names())]
        script = str(runtime / "worker.py")
        if iso.trusted or iso.uid is None:
            if not iso.trusted:
                become_subreaper()  # its daemons become our children, killed with it
            flags = ["-s"] if iso.trusted else ["-I"]
            sites = [a for s in iso.site for a in ("--site", s)]
            argv = [iso.python, *flags, script, *fds, *sites]
            env = worker_env(iso.trusted)
            limits = {} if iso.trusted else iso.limits.rlimits()
            self.proc = subprocess.Popen(
                argv, cwd=scratch, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                pass_fds=(req_r, rep_w), start_new_session=True,
                preexec_fn=lambda: _child_setup(limits),
            )  # fmt: skip
        else:
            sites = [a for s in iso.site for a in ("--site", s)]
            config = {
                "argv": [iso.python, "-I", "-S", script, *fds, *sites],
                "env": {"PATH": "/usr/bin:/bin", "HOME": str(scratch), "TMPDIR": str(scratch),
                        "LANG": "C.UTF-8", "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"},
                "cwd": str(scratch), "uid": iso.uid, "gid": iso.gid, "hide": iso.hide,
                "limits": iso.limits.rlimits(), "mount_namespace": iso.namespaces,
                "view": worker_view(iso, runtime, scratch, paths or []) if iso.namespaces else None,
                "cgroup": str(self.cgroup[0]) if self.cgroup else None,
                "binds": iso.binds,
            }  # fmt: skip
            launcher = [sys.executable, "-I", str(runtime / "launch.py"), json.dumps(config)]
            argv = [*_UNSHARE, "--", *launcher] if iso.namespaces else launcher
            self.proc = subprocess.Popen(
                argv, cwd=scratch, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                pass_fds=(req_r, rep_w), start_new_session=True, env={"PATH": "/usr/bin:/bin"},
                preexec_fn=lambda: _child_setup({}),
            )  # fmt: skip
        os.close(req_r)
        os.close(rep_w)
        if self.cgroup is None and not iso.trusted and iso.limits.memory_bytes > 0:
            threading.Thread(target=self._watch, daemon=True).start()

    def _watch(self) -> None:
        """The watchdog: kill the worker when its private plus shared resident memory
        passes the cap (where no memory cgroup is usable)."""
        cap = self.iso.limits.memory_bytes
        while self.proc.poll() is None:
            used = resident_bytes(worker_pids(self.iso.uid, self.proc.pid))
            if used > cap:
                self.memory_killed = f"{used / 2**30:.2f} GiB resident"
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                if self.iso.uid is not None:
                    kill_uid(self.iso.uid, self.iso.gid or self.iso.uid)
                return
            time.sleep(WATCHDOG_PERIOD)

    def memory_note(self) -> str:
        """Why the worker ended, if its memory cap stopped it; else ""."""
        cap = f"its memory cap of {self.iso.limits.memory_bytes / 2**30:g} GiB"
        if self.cgroup is not None and cgroup_oom_kills(*self.cgroup) > 0:
            return f"stopped by {cap} ({self.iso.memory_text()})"
        if self.memory_killed:
            return f"stopped by {cap} ({self.memory_killed}; {self.iso.memory_text()})"
        return ""

    def status(self) -> str:
        """How the process ended ("exit code N", "killed by SIGSEGV"), or "running"."""
        code = self.proc.poll()
        if code is None:
            return "running"
        if code < 0:
            return f"killed by {signal.Signals(-code).name}"
        if code > 128 and self.iso.namespaces:  # unshare reports a signal as 128 + N
            with contextlib.suppress(ValueError):
                return f"killed by {signal.Signals(code - 128).name}"
        return f"exit code {code}"

    def kill(self) -> None:
        """End the worker and everything it started; close the pipes."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)
        if self.iso.uid is not None:
            kill_uid(self.iso.uid, self.iso.gid or self.iso.uid)
        else:
            _kill_orphans()
        if self.cgroup is not None:
            remove_cgroup(self.cgroup[0])
        for fd in (self.req_w, self.rep_r):
            with contextlib.suppress(OSError):
                os.close(fd)


#: What every worker's view holds of the system, read-only (those that exist).
SYSTEM_PATHS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc",
                "/sys/devices/system/cpu")  # fmt: skip
#: Folders shared with every worker, read-write (``os.pathsep``-separated): for test
#: harnesses that watch a worker; never a folder holding submissions or results.
SHARED_ENV = "DL_CH2_WORKER_SHARED"


def worker_view(iso: Isolation, runtime: Path, scratch: Path, paths: list[str]) -> dict[str, Any]:
    """What a worker in namespaces sees (``launch.py`` builds it): the system's programs and
    libraries, its interpreter, its allowed libraries, its runtime and its own scratch
    folder; no other submission, batch, output or earlier run."""
    python = Path(os.path.realpath(iso.python))
    prefix = python.parents[1]  # e.g. /usr, or /opt/python3.11 for a Python of its own
    ro = [*SYSTEM_PATHS, str(prefix), *iso.site, str(runtime), *paths]
    shared = [p for p in os.environ.get(SHARED_ENV, "").split(os.pathsep) if p]
    rw = [str(scratch), *(os.path.realpath(p) for p in shared)]
    cap = iso.limits.memory_bytes
    return {"root": str(runtime.parent / "view"), "ro": [os.path.realpath(p) if not
            os.path.islink(p) else p for p in ro], "rw": rw,
            "shm_bytes": cap if cap > 0 else 2**30}  # fmt: skip


def _verb_names() -> list[str]:
    """Every verb of the protocol: the worker looks each up (``__getattr__`` verbs too)."""
    from conformance.adapter import VERBS

    return sorted({v for verbs in VERBS.values() for v in verbs})


def kill_uid(uid: int, gid: int) -> None:
    """Kill every process of ``uid`` (daemons that left the worker's namespace or session):
    a child that becomes ``uid`` and sends SIGKILL to all it may signal, until none is left."""
    for _ in range(5):
        pid = os.fork()
        if pid == 0:  # the child: syscalls only, then _exit
            try:
                os.setgroups([])
                os.setresgid(gid, gid, gid)
                os.setresuid(uid, uid, uid)
                os.kill(-1, signal.SIGKILL)
                os._exit(0)
            except BaseException:
                os._exit(1)
        _, status = os.waitpid(pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:  # ESRCH: nothing left of uid
            return
        time.sleep(0.01)


def become_subreaper() -> None:
    """Orphans of a worker (double-forked daemons) become this process's children, so
    ``_kill_orphans`` can end them when the grader is not root (Linux; a no-op elsewhere)."""
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER


def _kill_orphans() -> None:
    """Kill this subreaper's orphans, round after round: killing a daemon's parent makes the
    daemon an orphan of ours only once that parent has died, after the round that killed it."""
    for _ in range(50):
        if not _kill_orphans_once():
            return
        time.sleep(0.01)


def _kill_orphans_once() -> bool:
    me = os.getpid()
    proc = Path("/proc")
    killed = False
    if not proc.is_dir():
        return killed
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == me and _is_worker_orphan(int(entry.name)):
                os.kill(int(entry.name), signal.SIGKILL)
                killed = True
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass
    return killed


def _is_worker_orphan(pid: int) -> bool:
    """A child of this process that is not a Popen it started itself (they are waited)."""
    return Path(f"/proc/{pid}/environ").exists()


# --- the memory cap: private and shared memory (issue 29) -----------------------------------

#: Forces the memory cap's mechanism: "cgroup" (fail if none is usable) or "watchdog".
MEMORY_CAP_ENV = "DL_CH2_MEMORY_CAP"
#: Seconds between two looks of the watchdog at the worker's resident memory.
WATCHDOG_PERIOD = 0.05
_CGROUP_ROOT = Path("/sys/fs/cgroup")


def _own_cgroup(version: int) -> Path | None:
    """This process's memory cgroup folder (v1: the memory hierarchy's; v2: the unified)."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _id, controllers, path = line.split(":", 2)
        if (version == 1 and "memory" in controllers.split(",")) or (
            version == 2 and _id == "0" and controllers == ""
        ):
            base = _CGROUP_ROOT / "memory" if version == 1 else _CGROUP_ROOT
            return base / path.lstrip("/")
    return None


def memory_cgroup_parent() -> tuple[Path, int] | None:
    """Where this grader may make memory cgroups (folder, version), or None."""
    if os.geteuid() != 0 or os.environ.get(MEMORY_CAP_ENV) == "watchdog":
        return None
    v2 = _own_cgroup(2)
    delegated = v2 is not None and "memory" in _read(v2 / "cgroup.subtree_control").split()
    if v2 is not None and delegated and os.access(v2, os.W_OK):
        return v2, 2
    v1 = _own_cgroup(1)
    if v1 is not None and (v1 / "memory.limit_in_bytes").exists() and os.access(v1, os.W_OK):
        return v1, 1
    return None


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def make_memory_cgroup(limit: int) -> tuple[Path, int] | None:
    """A fresh memory cgroup capped at ``limit`` bytes (swap included), or None."""
    parent = memory_cgroup_parent()
    if parent is None or limit <= 0:
        return None
    base, version = parent
    folder = Path(tempfile.mkdtemp(prefix="dl-ch2-worker-", dir=base))
    try:
        if version == 2:
            (folder / "memory.max").write_text(str(limit))
            if (folder / "memory.swap.max").exists():
                (folder / "memory.swap.max").write_text("0")
        else:
            (folder / "memory.limit_in_bytes").write_text(str(limit))
            if (folder / "memory.memsw.limit_in_bytes").exists():
                (folder / "memory.memsw.limit_in_bytes").write_text(str(limit))
    except OSError:
        remove_cgroup(folder)
        return None
    return folder, version


def cgroup_oom_kills(folder: Path, version: int) -> int:
    """How many processes the cgroup's memory cap killed (its OOM events)."""
    text = _read(folder / ("memory.events" if version == 2 else "memory.oom_control"))
    for line in text.splitlines():
        if line.startswith("oom_kill "):
            return int(line.split()[1])
    return 0


def remove_cgroup(folder: Path) -> None:
    for _ in range(20):  # the killed processes leave it within a few milliseconds
        try:
            folder.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.05)


def resident_bytes(pids: list[int]) -> int:
    """Private plus shared resident memory (RssAnon + RssShmem) of ``pids`` together."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError, ValueError, IndexError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith(("RssAnon:", "RssShmem:")):
                    total += int(line.split()[1]) * 1024
    return total


def worker_pids(uid: int | None, session: int) -> list[int]:
    """The worker's processes: those of its uid (root level), or of its session."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            if uid is not None:
                if entry.stat().st_uid == uid:
                    pids.append(int(entry.name))
            elif os.getsid(int(entry.name)) == session:
                pids.append(int(entry.name))
    return pids
