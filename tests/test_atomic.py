"""The one atomic writer: fsync before the rename, the folder after it, no temp file left.

metrics.json, the figures, the weights and the MNIST files are all written through it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from test_figures_and_main_job import small_mnist

from conformance import atomic
from conformance.atomic import OutputPathError, atomic_path, atomic_write, ensure_writable_dir
from dl_ch2_tools import main_job


def _what(fd: int) -> str:
    return os.readlink(f"/proc/self/fd/{fd}")


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to name fds")
def test_the_data_is_fsynced_before_the_rename_and_the_folder_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append(("fsync", _what(fd)))
        real_fsync(fd)

    def replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        events.append(("replace", str(src)))
        real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "fsync", fsync)
    monkeypatch.setattr(atomic.os, "replace", replace)
    target = tmp_path / "metrics.json"
    atomic_write(target, '{"a": 1}\n')
    assert target.read_text() == '{"a": 1}\n'
    kinds = [kind for kind, _ in events]
    assert kinds == ["fsync", "replace", "fsync"], events
    tmp = events[1][1]
    assert events[0][1] == tmp and Path(tmp).parent == tmp_path  # the temp file's data
    assert events[2][1] == str(tmp_path)  # then the folder, so the rename is durable


def test_a_failed_rename_keeps_the_old_file_and_leaves_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "metrics.json"
    target.write_text("old\n")

    def fail(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(atomic.os, "replace", fail)
    with pytest.raises(OSError, match="No space"):
        atomic_write(target, "new\n")
    assert target.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


def test_a_writer_that_raises_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "fig.png"
    with pytest.raises(RuntimeError, match="savefig"), atomic_path(target) as tmp:
        tmp.write_bytes(b"half a PNG")
        raise RuntimeError("savefig failed (test)")
    assert list(tmp_path.iterdir()) == []


def test_metrics_json_failing_to_write_keeps_the_weights_and_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(main_job, "load_mnist", lambda root=None: small_mnist(60, 20))
    real_replace = os.replace

    def replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        if Path(dst).name == "metrics.json":
            raise OSError(28, "No space left on device")
        real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "replace", replace)
    out = tmp_path / "run"
    cfg = main_job.TrainConfig(model="naive", epochs=1, figures=False, out=out)
    with pytest.raises(OSError, match="No space"):
        main_job.run_train(cfg)
    assert sorted(p.name for p in out.iterdir()) == [
        "naive.safetensors",
        "naive.safetensors.json",
    ]
    assert json.loads((out / "naive.safetensors.json").read_text())["model"] == "naive"


def test_ensure_writable_dir(tmp_path: Path) -> None:
    assert ensure_writable_dir(tmp_path / "a" / "b") is True
    assert ensure_writable_dir(tmp_path / "a" / "b") is False
    assert list((tmp_path / "a" / "b").iterdir()) == []  # the probe is gone
    (tmp_path / "f").write_text("x")
    with pytest.raises(OutputPathError, match="not a directory"):
        ensure_writable_dir(tmp_path / "f")
    with pytest.raises(OutputPathError, match="cannot create"):
        ensure_writable_dir(tmp_path / "f" / "below")
