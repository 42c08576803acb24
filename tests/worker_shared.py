"""Folders a test shares with the submission's worker (its flags and notes).

As root the worker sees only its own submission, the libraries it may import and the folders
named in ``$DL_CH2_WORKER_SHARED`` (issue 29: a batch sees only itself). The tests that watch
a worker from outside make their folders under one such folder, made once per test process
and named in the environment the graders they start inherit.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

_ROOT: list[Path] = []


def shared_root() -> Path:
    """This test process's folder shared with every worker (mode 1777, removed at exit)."""
    if not _ROOT:
        root = Path(tempfile.mkdtemp(prefix="dl-ch2-test-shared-"))
        root.chmod(0o1777)
        _ROOT.append(root)
        os.environ["DL_CH2_WORKER_SHARED"] = str(root)
        atexit.register(shutil.rmtree, root, True)
    return _ROOT[0]


def shared_dir(prefix: str) -> Path:
    """A fresh folder any worker may write (mode 777), inside ``shared_root()``."""
    folder = Path(tempfile.mkdtemp(prefix=prefix, dir=shared_root()))
    folder.chmod(0o777)
    return folder


def worker_connection(
    tmp_path: Path, source: str, prefix: str, timeout: float, **options: Any
) -> tuple[Any, str]:
    """A grader's ``Connection`` to a worker for the submission ``source`` (written to
    ``tmp_path/sub.py``), not started; its grade folder is one the worker's uid reaches
    (the caller removes ``conn.grade_dir``)."""
    import time

    from conformance.grading.client import Connection, plan
    from conformance.grading.sandbox import Limits

    sub = tmp_path / "sub.py"
    sub.write_text(source)
    target, iso, paths = plan(str(sub), packages=["numpy"], hide=[], limits=Limits(),
                              cwd=str(tmp_path))  # fmt: skip
    grade_dir = Path(tempfile.mkdtemp(prefix=prefix))
    grade_dir.chmod(0o711)
    conn = Connection(target, iso, grade_dir, paths=paths, **options)
    conn.deadline = time.monotonic() + timeout
    return conn, target
