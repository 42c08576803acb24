"""A worker's libraries without copying them: read-only bind mounts of the installed ones.

TensorFlow is 1.3 GB; copying it for the worker (``sandbox.worker_site``) took 9 s and the
disk space of a second install. Where the worker gets a mount namespace of its own, its
library folder is instead a *view*: a folder (readable by anyone, root's own, built once and
cached by content) holding an empty mount point for each top-level package folder of the
allowed distributions and their dependencies, plus copies of their few loose files. In the
worker's namespace, before anything else is hidden, ``launch.py`` bind-mounts each installed
folder read-only onto its mount point (``binds``). Nothing outside the namespace changes,
and the worker sees those packages alone, read-only.

A folder that the allowed distributions share with others (a namespace package such as
``google/``) is not bound whole: its files of theirs are copied, as before.
"""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import json
import os
import shutil
import stat
import tempfile
from pathlib import Path

__all__ = ["library_view"]

_BINDS = "dl-ch2-binds.json"


def _owned_folders(
    dists: list[md.Distribution],
) -> tuple[dict[str, Path], list[tuple[Path, str]]]:
    """({top-level folder: its installed path} wholly owned by ``dists``, loose files as
    (installed path, path in the view))."""
    listed: dict[str, set[str]] = {}
    base: dict[str, Path] = {}
    loose: list[tuple[Path, str]] = []
    for dist in dists:
        for f in dist.files or []:
            if f.parts[0] == ".." or "__pycache__" in f.parts:
                continue
            src = Path(str(dist.locate_file(f)))
            if len(f.parts) == 1:
                if src.is_file():
                    loose.append((src, str(f)))
                continue
            listed.setdefault(f.parts[0], set()).add(str(f))
            base[f.parts[0]] = src.parents[len(f.parts) - 2]
    owned: dict[str, Path] = {}
    for top, files in listed.items():
        folder = base[top]
        present = {
            str(Path(d, n).relative_to(folder.parent))
            for d, dirs, names in os.walk(folder)
            if "__pycache__" not in Path(d).parts
            for n in names
        }
        if present <= files | {p for p in present if p.endswith(".pyc")}:
            owned[top] = folder
        else:  # shared with distributions not allowed: copy this folder's files of ours
            loose += [
                (folder.parent / f, f) for f in sorted(files) if (folder.parent / f).is_file()
            ]
    return owned, loose


def publish(tmp: Path, dest: Path) -> None:
    """Make a folder built in ``tmp`` readable by every worker uid (files 644, programs and
    folders 755) and move it to ``dest`` in one rename; if another grade built ``dest``
    first, ours is dropped. The library view's and the library copy's last step."""
    for d, _dirs, files in os.walk(tmp):
        os.chmod(d, 0o755)
        for name in files:
            mode = os.stat(os.path.join(d, name)).st_mode
            os.chmod(os.path.join(d, name), 0o755 if mode & stat.S_IXUSR else 0o644)
    try:
        tmp.rename(dest)
    except OSError:  # another grade built it first
        shutil.rmtree(tmp, ignore_errors=True)


def _build(dest: Path, owned: dict[str, Path], loose: list[tuple[Path, str]], root: Path) -> None:
    tmp = Path(tempfile.mkdtemp(prefix=".dl-ch2-view-", dir=root))
    binds = []
    for top, folder in sorted(owned.items()):
        (tmp / top).mkdir(mode=0o755)
        binds.append([str(folder), str(dest / top)])
    for src, rel in loose:
        target = tmp / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, target)
    (tmp / _BINDS).write_text(json.dumps(binds))
    publish(tmp, dest)


def library_view(dists: list[md.Distribution], root: Path) -> tuple[str, list[list[str]]]:
    """(the view folder, its [installed folder, mount point] pairs) for ``dists``."""
    names = sorted(f"{d.metadata['Name']}=={d.version}@{d.locate_file('')}" for d in dists)
    key = hashlib.sha256(json.dumps(names).encode()).hexdigest()[:16]
    dest = root / f"dl-ch2-worker-view-{key}"
    if not (dest / _BINDS).is_file():
        owned, loose = _owned_folders(dists)
        _build(dest, owned, loose, root)
    binds = json.loads((dest / _BINDS).read_text())
    return str(dest), [[str(a), str(b)] for a, b in binds]
