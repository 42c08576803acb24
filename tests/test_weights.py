"""Issue 14: `dl-ch2 train` keeps what it trained; `dl-ch2 evaluate --weights` reloads it.

The weights file's sha256 is checked against its sidecar before anything is parsed.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from test_figures_and_main_job import small_mnist

from dl_ch2.first_example import build_first_example_model
from dl_ch2.naive_model import build_naive_model
from dl_ch2_tools import main_job, weights
from dl_ch2_tools.cli import main
from dl_ch2_tools.weights import WeightsError, load_weights, save_weights, sidecar_path


def test_save_then_load_gives_the_same_tensors_and_an_honest_sidecar(tmp_path: Path) -> None:
    model = build_naive_model(generator=torch.Generator().manual_seed(0))
    path = tmp_path / "m.safetensors"
    side = save_weights(model, path, {"note": "hello"})
    assert side == tmp_path / "m.safetensors.json" == sidecar_path(path)
    meta = json.loads(side.read_text())
    assert meta["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert meta["bytes"] == path.stat().st_size and meta["note"] == "hello"
    assert meta["tensors"]["layers.0.W"] == {"shape": [784, 512], "dtype": "float32"}
    tensors, meta2 = load_weights(path)
    assert meta2 == meta
    assert set(tensors) == {"layers.0.W", "layers.0.b", "layers.1.W", "layers.1.b"}
    assert torch.equal(tensors["layers.0.W"], model.layers[0].W.detach())
    assert torch.equal(tensors["layers.1.b"], model.layers[1].b.detach())
    assert load_weights(side)[1] == meta  # the sidecar's path works too


def _never_parse(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(data: bytes) -> Any:
        raise AssertionError("the weights were parsed before their sha256 was checked")

    monkeypatch.setattr(weights, "_load_safetensors", refuse)


def test_tampered_weights_are_refused_before_parsing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "m.safetensors"
    save_weights(build_naive_model(generator=torch.Generator().manual_seed(0)), path)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit of one weight: still a valid safetensors file
    path.write_bytes(bytes(data))
    _never_parse(monkeypatch)
    with pytest.raises(WeightsError, match=r"sha256 .* tampered"):
        load_weights(path)


def test_truncated_weights_are_refused_before_parsing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "m.safetensors"
    save_weights(build_naive_model(generator=torch.Generator().manual_seed(0)), path)
    path.write_bytes(path.read_bytes()[:1000])
    _never_parse(monkeypatch)
    with pytest.raises(WeightsError, match=r"1000 bytes.*truncated"):
        load_weights(path)


def test_weights_without_their_sidecar_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    save_weights(build_naive_model(generator=torch.Generator().manual_seed(0)), path)
    sidecar_path(path).unlink()
    with pytest.raises(WeightsError, match="no sidecar"):
        load_weights(path)


def test_a_sidecar_cannot_point_outside_its_folder(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    side = save_weights(build_naive_model(generator=torch.Generator().manual_seed(0)), path)
    meta = json.loads(side.read_text())
    meta["weights_file"] = "../elsewhere.safetensors"
    side.write_text(json.dumps(meta))
    with pytest.raises(WeightsError, match="file name beside it"):
        load_weights(path)


@pytest.fixture(scope="module")
def module_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny real run of both models on synthetic MNIST-shaped data (made once)."""
    out = tmp_path_factory.mktemp("weights") / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(main_job, "load_mnist", lambda root=None: small_mnist(600, 200))
        argv = ["train", "--epochs", "2", "--batch-size", "32", "--learning-rate", "0.001"]
        assert main([*argv, "--seed", "3", "--no-figures", "--out", str(out)]) == 0
    return out


@pytest.fixture
def trained_run(module_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private copy of the run (tests may damage it), evaluated on the same data."""
    monkeypatch.setattr(main_job, "load_mnist", lambda root=None: small_mnist(600, 200))
    out = tmp_path / "run"
    shutil.copytree(module_run, out)
    return out


def _accuracy_printed(out: str) -> float:
    match = re.search(
        r"^test accuracy: (\d\.\d+) \(the run recorded \d\.\d+: the same\)", out, re.M
    )
    assert match, out
    return float(match.group(1))


@pytest.mark.parametrize("kind", ["naive", "keras"])
def test_evaluate_reloads_a_run_s_weights_and_gets_its_accuracy(
    kind: str, trained_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    metrics = json.loads((trained_run / "metrics.json").read_text())
    assert metrics[kind]["weights"] == f"{kind}.safetensors"
    side = json.loads((trained_run / f"{kind}.safetensors.json").read_text())
    assert side["model"] == kind and side["config"]["seed"] == 3
    assert side["config"]["learning_rate"] == 0.001 and side["config"]["batch_size"] == 32
    assert side["mnist_md5"] == metrics["mnist_md5"] and len(side["mnist_md5"]) == 4
    capsys.readouterr()
    assert main(["evaluate", "--weights", str(trained_run / f"{kind}.safetensors")]) == 0
    reported = _accuracy_printed(capsys.readouterr().out)
    recorded = metrics[kind]["test_accuracy"]
    assert reported == pytest.approx(recorded, abs=5e-5)  # printed with 4 decimals
    # the trained weights were saved, not the initial ones (same seed, same builder)
    fresh = (build_naive_model if kind == "naive" else build_first_example_model)(
        generator=torch.Generator().manual_seed(3)
    )
    saved, _ = load_weights(trained_run / f"{kind}.safetensors")
    assert saved.keys() == fresh.state_dict().keys()
    assert not all(torch.equal(saved[k], v) for k, v in fresh.state_dict().items())
    if kind == "keras":
        assert recorded > 0.5  # chance is 0.1 on these easy synthetic classes


def test_evaluate_refuses_tampered_weights_exit_1(
    trained_run: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = trained_run / "naive.safetensors"
    data = bytearray(path.read_bytes())
    data[-7] ^= 0xFF
    path.write_bytes(bytes(data))
    _never_parse(monkeypatch)
    capsys.readouterr()
    assert main(["evaluate", "--weights", str(path)]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.splitlines()) == 1
    assert "WeightsError" in err and "sha256" in err and str(path) in err


def test_evaluate_refuses_weights_trained_on_other_data(
    trained_run: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(main_job, "load_mnist", lambda root=None: small_mnist(600, 200, seed=9))
    capsys.readouterr()
    assert main(["evaluate", "--weights", str(trained_run / "keras.safetensors")]) == 1
    assert "md5s" in capsys.readouterr().err


def test_numpy_backend_weights_are_saved_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(main_job, "load_mnist", lambda root=None: small_mnist(600, 200))
    out = tmp_path / "np"
    argv = ["train", "--backend", "numpy", "--model", "keras", "--epochs", "2"]
    assert main([*argv, "--batch-size", "32", "--learning-rate", "0.001", "--out", str(out)]) == 0
    recorded = json.loads((out / "metrics.json").read_text())["keras"]["test_accuracy"]
    capsys.readouterr()
    assert main(["evaluate", "--weights", str(out / "keras.safetensors")]) == 0
    out_text = capsys.readouterr().out
    match = re.search(r"^test accuracy: (\d\.\d+)", out_text, re.M)
    assert match and recorded > 0.5
    # NumPy's float32 matmul rounds differently from torch's: one test digit of 200 at most
    assert abs(float(match.group(1)) - recorded) <= 0.005 + 5e-5


def test_the_docs_snippet_saves_and_loads_a_naive_sequential(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    page = (Path(__file__).resolve().parents[1] / "docs" / "weights.md").read_text()
    section = page.split("# Saving and loading weights", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    namespace: dict[str, Any] = {}
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "docs/weights.md", "exec"), namespace)
    assert (tmp_path / "naive.safetensors").is_file()
    model, restored = namespace["model"], namespace["restored"]
    for a, b in zip(model.weights, restored.weights, strict=True):
        assert torch.equal(a, b)
    x = torch.rand(3, 784, generator=torch.Generator().manual_seed(1))
    assert torch.equal(model(x), restored(x))


def _forge(path: Path, accuracy: float | None = None) -> None:
    """Zero the weights and edit the sidecar to match: what anyone can do to a checksum."""
    tensors, meta = load_weights(path)
    blob = weights._save_safetensors({k: torch.zeros_like(v) for k, v in tensors.items()})
    path.write_bytes(blob)
    meta["sha256"], meta["bytes"] = hashlib.sha256(blob).hexdigest(), len(blob)
    if accuracy is not None:
        meta["test_accuracy"] = accuracy
    sidecar_path(path).write_text(json.dumps(meta))


def test_the_signing_key_is_made_once_and_kept_private(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = tmp_path / "cfg" / "weights.key"
    monkeypatch.setenv("DL_CH2_WEIGHTS_KEY", str(key))
    model = build_naive_model(generator=torch.Generator().manual_seed(0))
    save_weights(model, tmp_path / "a.safetensors")
    first = key.read_bytes()
    save_weights(model, tmp_path / "b.safetensors")
    assert key.read_bytes() == first and len(bytes.fromhex(first.decode().strip())) == 32
    assert key.stat().st_mode & 0o777 == 0o600 and key.parent.stat().st_mode & 0o777 == 0o700
    assert weights.record_trust(load_weights(tmp_path / "a.safetensors")[1])[0] is True
    key.chmod(0o644)
    with pytest.raises(WeightsError, match="readable by others"):
        load_weights(tmp_path / "a.safetensors")


def test_a_sidecar_edited_to_match_forged_weights_is_refused(tmp_path: Path) -> None:
    """Issue 29: zeroed weights with a recomputed sha256 loaded as "verified"."""
    path = tmp_path / "m.safetensors"
    save_weights(build_naive_model(generator=torch.Generator().manual_seed(0)), path)
    _forge(path)
    with pytest.raises(WeightsError, match="edited after it was signed with your key"):
        load_weights(path)


def test_evaluate_compares_only_a_record_signed_with_your_key(
    trained_run: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = trained_run / "keras.safetensors"
    capsys.readouterr()
    assert main(["evaluate", "--weights", str(path)]) == 0
    assert "signed with your key" in capsys.readouterr().out
    _forge(path)  # a forger's edit of the record is refused...
    assert main(["evaluate", "--weights", str(path)]) == 1
    assert "edited after it was signed" in capsys.readouterr().err
    # ...and on a machine without the key, the record is not trusted, and says why
    monkeypatch.setenv("DL_CH2_WEIGHTS_KEY", str(trained_run / "another.key"))
    assert main(["evaluate", "--weights", str(path)]) == 0
    out = capsys.readouterr().out
    assert "detects corruption, not tampering" in out and "not compared" in out, out
    assert "the same" not in out
