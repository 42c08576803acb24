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
