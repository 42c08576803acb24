"""MNIST for the data-dependent specs, read without torch.

Looks where ``dl-ch2 data`` puts the files (``$DL_CH2_DATA``, else ``~/.cache/dl-ch2``, in
torchvision's ``MNIST/raw`` layout) and verifies the published md5s; specs skip with a
reason when the files are absent.
"""

from __future__ import annotations

import hashlib
import os
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest

FILES = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}


def raw_folder() -> Path:
    env = os.environ.get("DL_CH2_DATA")
    root = (
        Path(env).expanduser()
        if env
        else Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "dl-ch2"
    )
    return root / "MNIST" / "raw"


def _read(path: Path, md5: str) -> np.ndarray:
    data = path.read_bytes()
    if hashlib.md5(data, usedforsecurity=False).hexdigest() != md5:
        raise ValueError(f"{path}: md5 mismatch; delete it and run `dl-ch2 data`")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


@lru_cache(maxsize=1)
def load() -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]] | None:
    raw = raw_folder()
    if not all((raw / name).exists() for name in FILES):
        return None
    a = {name: _read(raw / name, md5) for name, md5 in FILES.items()}
    return (
        (a["train-images-idx3-ubyte"], a["train-labels-idx1-ubyte"]),
        (a["t10k-images-idx3-ubyte"], a["t10k-labels-idx1-ubyte"]),
    )


def mnist_or_skip() -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    data = load()
    if data is None:
        pytest.skip(f"MNIST files not found in {raw_folder()} (run `dl-ch2 data`)")
    return data
