"""Root's last steps before a worker runs a submission: hide, limit, drop, exec.

Run by the grader as root, as a script (``python -I launch.py CONFIG_JSON``), usually
inside new network, PID and mount namespaces made by ``unshare``. In order:

1. cover each path of ``hide`` with an empty, read-only tmpfs (only in a mount namespace
   of its own: the grader's files, the answers, other submissions, the results);
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

_PR_SET_NO_NEW_PRIVS = 38


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


def _bind(binds: list[list[str]]) -> None:
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
    if config.get("mount_namespace"):
        argv = config["argv"]
        sites = [v for k, v in itertools.pairwise(argv) if k in ("--site", "--path")]
        needed = [os.path.realpath(p) for p in (config["cwd"], argv[0], argv[3], *sites)]
        _bind(config.get("binds", []))
        _hide([os.path.realpath(p) for p in config["hide"]], needed)
    os.chdir(config["cwd"])
    _limit(config["limits"])
    _drop(int(config["uid"]), int(config["gid"]))
    argv = config["argv"]
    os.execve(argv[0], argv, config["env"])


if __name__ == "__main__":
    main()
