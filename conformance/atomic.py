"""The one way this project writes a file: a temp file in the same folder, fsync, rename.

Readers never see a half-written file, and a failure leaves the old file (if any) in place
and no temp file behind. The temp file is fsynced before the rename, and the folder after
it (POSIX), so a crash right after a write returns either the old file or the whole new
one. Pure standard library: the conformance suite's writers (report cards, golden files,
bundles) and the tooling's (MNIST cache, weights, figures, run folders) share it, and
importing it loads neither torch nor the rest of the suite.

``ensure_writable_dir`` is the matching check for output folders: commands call it before
any work, so a run is never lost to an output location that cannot be written.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["OutputPathError", "atomic_path", "atomic_write", "ensure_writable_dir"]


class OutputPathError(ValueError):
    """An output folder that cannot be used (a file, not creatable, not writable)."""


def _fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (POSIX); a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - Windows cannot open a folder
        return
    try:
        with contextlib.suppress(OSError):  # some filesystems refuse fsync on a folder
            os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], *, mode: int = 0o644) -> Iterator[Path]:
    """Yield a temp path beside ``path``; on success fsync it and rename it over ``path``.

    For writers that need a file name (``savefig``, ``np.savez``). On any exception the temp
    file is removed and ``path`` is left as it was.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, mode)  # mkstemp creates 0600; outputs are meant to be shared
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    _fsync_dir(target.parent)


def atomic_write(path: str | os.PathLike[str], data: bytes | str, *, mode: int = 0o644) -> Path:
    """Write ``data`` (str is UTF-8 encoded) to ``path`` atomically; return the path."""
    payload = data.encode("utf-8") if isinstance(data, str) else data
    with atomic_path(path, mode=mode) as tmp:
        tmp.write_bytes(payload)
    return Path(path)


def ensure_writable_dir(path: str | os.PathLike[str]) -> bool:
    """Make sure ``path`` is a folder this process can create files in; True if it made it.

    Checked by creating and removing a probe file, so permissions, read-only mounts and
    ACLs all count. Raises ``OutputPathError`` (naming the path and why) otherwise.
    """
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise OutputPathError(f"{folder} exists and is not a directory")
    created = not folder.exists()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputPathError(f"cannot create directory {folder} ({exc.strerror or exc})") from exc
    try:
        fd, probe = tempfile.mkstemp(prefix=".write-probe-", dir=folder)
    except OSError as exc:
        raise OutputPathError(f"{folder} is not writable ({exc.strerror or exc})") from exc
    os.close(fd)
    os.unlink(probe)
    return created
