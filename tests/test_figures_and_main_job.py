"""The figures (valid, non-blank PNGs of the expected size) and the main job on small data."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest

from dl_ch2_tools import main_job
from dl_ch2_tools.cli import main

plt = pytest.importorskip("matplotlib.pyplot", reason="matplotlib (the plot extra) not installed")
from dl_ch2_tools import figures  # noqa: E402


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def assert_good_png(path: Path) -> None:
    assert png_size(path) == figures.FIGURE_SIZE_PX
    img = plt.imread(path)[..., :3]
    assert img.std() > 0.02, f"{path.name} looks blank"
    # more than a title on a white page: a real share of pixels is not white
    assert (img.mean(axis=-1) < 0.9).mean() > 0.005, f"{path.name} is nearly empty"


def small_mnist(n_train: int = 600, n_test: int = 200, seed: int = 0):  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(seed)
    masks = rng.random((10, 28, 28)) < 0.15
    ty, sy = (
        rng.integers(0, 10, n_train).astype(np.uint8),
        rng.integers(0, 10, n_test).astype(np.uint8),
    )
    tx = (masks[ty] * rng.integers(100, 256, (n_train, 28, 28))).astype(np.uint8)
    sx = (masks[sy] * rng.integers(100, 256, (n_test, 28, 28))).astype(np.uint8)
    return (tx, ty), (sx, sy)


def test_every_figure_is_a_valid_non_blank_png(tmp_path: Path) -> None:
    (tx, ty), _ = small_mnist()
    losses = [[2.3 - 0.01 * i for i in range(50)], [1.8 - 0.01 * i for i in range(50)]]
    paths = figures.make_all(tmp_path, tx, ty, losses)
    names = sorted(p.name for p in paths)
    assert names == sorted(
        [
            "sgd_learning_rates.png",
            "momentum_local_global.png",
            "gradient_descent_2d.png",
            "digits_grid.png",
            "train_images_4.png",
            "loss_curve.png",
        ]
    )
    for p in paths:
        assert_good_png(p)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left


@pytest.mark.parametrize("backend", ["torch", "numpy"])
def test_main_job_end_to_end_on_small_data(
    backend: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(main_job, "load_mnist", lambda root=None: small_mnist())
    rc = main(
        [
            "train",
            "--backend",
            backend,
            "--epochs",
            "2",
            "--batch-size",
            "32",
            "--learning-rate",
            "0.001",
            "--seed",
            "3",
            "--out",
            str(tmp_path / "run"),
        ]
    )
    assert rc == 0
    out = capsys.readouterr().out
    for needle in (
        "train_images.shape = (600, 28, 28), dtype uint8",
        "Epoch 0",
        "Epoch 1",
        "loss at batch 0:",
        "accuracy: ",
        "Epoch 2/2: 19 steps",
        "test_acc: ",
        "predicted class of test_images[0]:",
    ):
        assert needle in out
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["seed"] == 3 and metrics["backend"] == backend
    assert set(metrics["versions"]) >= {"torch", "numpy", "python", "dl_ch2"}
    assert len(metrics["naive"]["batch_losses"]) == 2
    assert len(metrics["naive"]["batch_losses"][0]) == 19  # ceil(600 / 32)
    assert len(metrics["keras"]["epoch_loss"]) == 2 and metrics["keras"]["steps_per_epoch"] == 19
    # the printed `accuracy` is Keras' running mean; the whole training set's is named apart
    keras = metrics["keras"]
    assert len(keras["epoch_accuracy"]) == len(keras["epoch_train_set_accuracy"]) == 2
    assert keras["epoch_accuracy"] != keras["epoch_train_set_accuracy"]
    assert all(abs(v * 600 - round(v * 600)) < 1e-6 for v in keras["epoch_accuracy"])
    last = f"accuracy: {keras['epoch_accuracy'][1]:.4f} - train_set_accuracy: "
    assert f"{last}{keras['epoch_train_set_accuracy'][1]:.4f}" in out
    assert metrics["keras"]["test_accuracy"] > 0.5  # easy synthetic classes
    assert metrics["wall_time_s"] > 0
    for name in metrics["figures"]:
        assert_good_png(tmp_path / "run" / name)


def test_numpy_and_torch_backends_agree_from_the_same_seed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(main_job, "load_mnist", lambda root=None: small_mnist())
    results = {}
    for backend in ("torch", "numpy"):
        cfg = main_job.TrainConfig(
            backend=backend,
            epochs=2,
            batch_size=32,
            learning_rate=0.001,
            seed=1,
            out=tmp_path / backend,
            figures=False,
        )
        results[backend] = main_job.run_train(cfg)
    for model in ("naive", "keras"):
        t, n = results["torch"][model], results["numpy"][model]
        assert abs(t["test_accuracy"] - n["test_accuracy"]) <= 0.002
        np.testing.assert_allclose(t["epoch_loss"], n["epoch_loss"], rtol=1e-4)
    t_acc, n_acc = (
        results["torch"]["keras"]["epoch_accuracy"],
        results["numpy"]["keras"]["epoch_accuracy"],
    )
    np.testing.assert_allclose(t_acc, n_acc, atol=3 / 600)  # float32: a few samples apart at most


def test_train_rejects_bad_options(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--model", "resnet"]) == 2
    assert "argument --model" in capsys.readouterr().err
    with pytest.raises(ValueError, match="backend"):
        main_job.run_train(main_job.TrainConfig(backend="jax"))


def test_train_picks_the_first_example_rmsprop_by_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # issue 23: --rmsprop keras-3 is TF 2.11+ / Keras 3's RMSprop; recorded in the sidecar
    monkeypatch.setattr(main_job, "load_mnist", lambda root=None: small_mnist())
    losses = {}
    for variant in ("keras-2.6", "keras-3"):
        out = tmp_path / variant
        assert main(["train", "--model", "keras", "--epochs", "1", "--no-figures",
                     "--rmsprop", variant, "--out", str(out)]) == 0  # fmt: skip
        metrics = json.loads((out / "metrics.json").read_text())
        assert metrics["rmsprop"] == variant
        sidecar = json.loads((out / "keras.safetensors.json").read_text())
        assert sidecar["config"]["rmsprop"] == variant
        losses[variant] = metrics["keras"]["epoch_loss"]
    assert losses["keras-2.6"] != losses["keras-3"]


def test_the_numpy_reference_has_only_the_books_rmsprop(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["train", "--backend", "numpy", "--rmsprop", "keras-3"]) == 2
    err = capsys.readouterr().err
    assert "argument --rmsprop" in err and "keras-2.6" in err
    assert main(["train", "--rmsprop", "tf2"]) == 2
    assert "argument --rmsprop: invalid choice" in capsys.readouterr().err
