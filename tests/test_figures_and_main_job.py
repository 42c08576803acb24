"""The figures (valid, non-blank PNGs of the expected size) and the main job on small data."""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from dl_ch2_tools import main_job
from dl_ch2_tools.cli import main

plt = pytest.importorskip("matplotlib.pyplot", reason="matplotlib (the plot extra) not installed")
import matplotlib.text  # noqa: E402

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
            "vector_addition.png",
            "rotation.png",
            "computation_graph.png",
        ]
    )
    for p in paths:
        assert_good_png(p)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left


def _drawn_text(monkeypatch: pytest.MonkeyPatch, draw: Any, tmp_path: Path) -> str:
    """Every text a figure function puts on its figure (titles, labels, legends, notes)."""
    seen: list[Any] = []
    real_save = figures._save
    monkeypatch.setattr(
        figures, "_save", lambda fig, path: (seen.append(fig), real_save(fig, path))[1]
    )
    draw(tmp_path / "figure.png")
    (fig,) = seen
    return "\n".join(t.get_text() for t in fig.findobj(matplotlib.text.Text))


def test_momentum_figure_shows_the_books_rule_and_plain_momentum_labelled(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    paths = figures.momentum_paths()
    # from w0=2.5 at lr 0.01: plain SGD and the book's rule at its own momentum (0.1) stop
    # in the local minimum near 1.332; plain momentum 0.9 rolls on to the global one
    assert paths["sgd"][-1] == pytest.approx(1.3322, abs=1e-3)
    assert paths["book"][-1] == pytest.approx(1.3322, abs=1e-3)
    assert paths["momentum"][-1] == pytest.approx(-1.4840, abs=1e-3)
    # the book's rule by hand for two steps: v = 0.1 v - lr g; w = w + 0.1 v - lr g
    w, v = 2.5, 0.0
    for _ in range(2):
        grad = w**3 - 2 * w + 0.3
        v = 0.1 * v - 0.01 * grad
        w = w + 0.1 * v - 0.01 * grad
    assert paths["book"][2] == pytest.approx(w, rel=1e-12)
    text = _drawn_text(monkeypatch, figures.momentum_local_global, tmp_path)
    assert "the book's rule" in text and "momentum=0.1" in text and "ends at w=1.33" in text
    assert "plain momentum" in text and "momentum=0.9" in text and "ends at w=-1.48" in text


def test_geometry_and_graph_figures_carry_the_chapters_values(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    text = _drawn_text(monkeypatch, figures.vector_addition, tmp_path)
    assert "A = [0.5, 1]" in text and "B = [1, 0.25]" in text and "A + B = [1.5, 1.25]" in text
    text = _drawn_text(monkeypatch, figures.rotation, tmp_path)
    assert "u = [cos θ, sin θ]" in text and "v = [-sin θ, cos θ]" in text
    assert "[0.87, 0.5]" in text  # [1, 0] rotated by 30 degrees, cos 30° = 0.866
    text = _drawn_text(monkeypatch, figures.computation_graph, tmp_path)
    for label in ("x1 = x * w = 6", "x2 = x1 + b = 7", "loss_val = abs(y_true - x2) = 3"):
        assert label in text
    assert "grad(loss_val, w) = 1 * 1 * 2 = 2" in text and "grad(loss_val, b) = 1 * 1 = 1" in text


def test_figures_without_matplotlib_name_the_extra_in_one_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib: ImportError
    loaded: list[bool] = []
    monkeypatch.setattr("dl_ch2_tools.mnist.load_mnist", lambda *a, **k: loaded.append(True))
    assert main(["figures", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("dl-ch2 figures: error: ") and "pip install 'dl-ch2[plot]'" in err
    assert not loaded and not list(tmp_path.iterdir())  # refused before any work


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
