"""Root's last steps before a worker runs a submission: hide, limit, drop, exec.

Run by the grader as root, as a script (``python -I launch.py CONFIG_JSON``), usually
inside new network, PID and mount namespaces made by ``unshare``. In order:

1. in a mount namespace of its own, build the worker's **view** and ``chroot`` into it: an
   empty tmpfs holding, read-only, the system's programs and libraries (``/usr``, ``/lib*``,
   ``/etc``), the interpreter, the allowed libraries' copy and the worker's runtime; its own
   scratch folder read-write; a fresh ``/proc`` (its PID namespace), a few device files, and
   a ``/dev/shm`` and ``/tmp`` of their own, sized by the memory cap. Nothing else exists
   there: not other submissions, other batches' folders, the grader's outputs or earlier
   runs (issue 29). Each path of ``hide`` found in the view is then covered with an empty,
   read-only tmpfs (the grader's packages, if installed under ``/usr``). Without a view
   (``view`` absent) the paths of ``hide`` are covered in the host's tree instead;
2. set the resource limits, soft and hard, so the worker cannot raise them;
3. move to the scratch folder, drop every group and become the worker's uid/gid, with
   ``no_new_privs`` set (no setuid binary can give rights back);
4. exec the worker's interpreter with a scrubbed environment.

Standard library only; nothing here reads what the submission wrote.
"""

from __future__ import annotations

import ctypes
import itertools
import json
import os
import resource
import subprocess
import sys
from typing import Any

_PR_SET_NO_NEW_PRIVS = 38
_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_NOEXEC = 1, 2, 4, 8
_MS_REMOUNT, _MS_BIND, _MS_REC, _MS_PRIVATE = 32, 4096, 16384, 1 << 18
_DEVICES = ("null", "zero", "full", "random", "urandom")
_LIBC = ctypes.CDLL(None, use_errno=True)


def _mount(src: str, dst: str, fstype: str | None, flags: int, data: str = "") -> None:
    raw = (src.encode(), dst.encode(), fstype.encode() if fstype else None, flags,
           data.encode() if data else None)  # fmt: skip
    if _LIBC.mount(*raw) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {src} on {dst}: {os.strerror(err)}")


def _bind(src: str, root: str, *, writable: bool = False) -> None:
    """``src`` at the same path inside ``root`` (a symlink stays a symlink)."""
    dst = root + src
    if os.path.islink(src):
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        if not os.path.lexists(dst):
            os.symlink(os.readlink(src), dst)
        return
    if os.path.isdir(src):
        os.makedirs(dst, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        open(dst, "a").close()  # an empty file to mount over
    _mount(src, dst, None, _MS_BIND | _MS_REC)
    flags = _MS_REMOUNT | _MS_BIND | _MS_NOSUID | (0 if writable else _MS_RDONLY)
    _mount("none", dst, None, flags | (0 if src.startswith("/dev/") else _MS_NODEV))


def _tmpfs(dst: str, options: str) -> None:
    os.makedirs(dst, exist_ok=True)
    _mount("dl-ch2-view", dst, "tmpfs", _MS_NOSUID | _MS_NODEV, options)


def _enter_view(view: dict[str, Any]) -> None:
    """Build the worker's view (module doc, step 1) and chroot into it."""
    root = os.path.realpath(view["root"])
    _mount("none", "/", None, _MS_REC | _MS_PRIVATE)  # nothing leaks back to the host
    _tmpfs(root, "mode=755,size=1m")
    size = int(view["shm_bytes"])
    _tmpfs(root + "/tmp", f"mode=1777,size={size}")  # first: the scratch folder may be in /tmp
    for path in view["ro"]:
        if os.path.lexists(path):
            _bind(path, root)
    for path in view["rw"]:
        if os.path.isdir(path):
            _bind(path, root, writable=True)
    os.makedirs(root + "/proc", exist_ok=True)
    _mount("proc", root + "/proc", "proc", _MS_NOSUID | _MS_NODEV | _MS_NOEXEC)
    _tmpfs(root + "/dev", "mode=755,size=64k")
    for name in _DEVICES:
        _bind("/dev/" + name, root, writable=True)
    os.symlink("/proc/self/fd", root + "/dev/fd")
    _tmpfs(root + "/dev/shm", f"mode=1777,size={size}")
    _hide([root + os.path.realpath(p) for p in view["hide"]], [root + n for n in view["needed"]])
    _mount("none", root, None, _MS_REMOUNT | _MS_RDONLY | _MS_NOSUID | _MS_NODEV, "size=1m")
    os.chroot(root)


def _hide(paths: list[str], needed: list[str]) -> None:
    """Cover each path, but one holding what the worker needs (an output file's folder may
    be /tmp, where the worker's scratch folder lives: the grader replaces such files
    atomically, as root, after the worker has ended)."""
    for path in paths:
        inside = [n for n in needed if n == path or n.startswith(path.rstrip("/") + "/")]
        if os.path.exists(path) and not inside:
            subprocess.run(
                ["mount", "-t", "tmpfs", "-o", "ro,size=4k,mode=0", "dl-ch2-hidden", path],
                check=True,
            )


def _bind_libraries(binds: list[list[str]]) -> None:
    """Bind each installed library folder read-only onto its mount point in the worker's
    view (only in a mount namespace of its own; before anything is hidden)."""
    for source, target in binds:
        subprocess.run(["mount", "--bind", source, target], check=True)
        subprocess.run(["mount", "-o", "remount,bind,ro", target], check=True)


def _limit(limits: dict[str, int]) -> None:
    for name, value in limits.items():
        resource.setrlimit(getattr(resource, name), (value, value))


def _drop(uid: int, gid: int) -> None:
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)


def main() -> None:
    config = json.loads(sys.argv[1])
    if config.get("cgroup"):  # the memory cap, shared memory included (issue 29)
        with open(os.path.join(config["cgroup"], "cgroup.procs"), "w") as f:
            f.write(str(os.getpid()))
    if config.get("mount_namespace"):
        argv = config["argv"]
        sites = [v for k, v in itertools.pairwise(argv) if k in ("--site", "--path")]
        needed = [os.path.realpath(p) for p in (config["cwd"], argv[0], argv[3], *sites)]
        _bind_libraries(config.get("binds", []))  # first: the view binds the site with its mounts
        if config.get("view"):
            _enter_view({**config["view"], "hide": config["hide"], "needed": needed})
        else:
            _hide([os.path.realpath(p) for p in config["hide"]], needed)
    os.chdir(config["cwd"])
    _limit(config["limits"])
    _drop(int(config["uid"]), int(config["gid"]))
    argv = config["argv"]
    os.execve(argv[0], argv, config["env"])


if __name__ == "__main__":
    main()
