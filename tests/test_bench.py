"""The benchmark runs end to end on a small synthetic set and writes its JSON and table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dl_ch2.tools.cli import main


def test_bench_smoke(tmp_path: Path) -> None:
    rc = main(
        [
            "bench",
            "--samples",
            "1280",
            "--repeats",
            "2",
            "--epochs",
            "2",
            "--no-memory",
            "--out",
            str(tmp_path),
        ]
    )
    assert rc == 0
    data = json.loads((tmp_path / "bench.json").read_text())
    for key in (
        "gemm_floor",
        "port_fit_sgd",
        "port_keras_rmsprop",
        "idiomatic_dataloader_sgd",
        "numpy_reference",
        "naive_vs_vectorized",
        "ratios",
    ):
        assert key in data
    assert data["port_fit_sgd"]["epoch_2"]["median_s"] > 0
    assert data["ratios"]["port_fit_sgd/epoch_1/floor"] > 0
    assert data["naive_vs_vectorized"]["ratio"] > 10  # loops are far slower
    # ratios are medians of per-round pairs: recompute them from the raw samples
    floor = data["gemm_floor"]["samples_s"]
    assert len(floor) == 2 * 2  # repeats x epochs, in round order
    for name in ("port_fit_sgd", "port_keras_rmsprop", "numpy_reference"):
        for e, i in (("epoch_1", 0), ("epoch_2", 1)):
            samples = data[name][e]["samples_s"]
            pairs = sorted(t / floor[r * 2 + i] for r, t in enumerate(samples))
            assert data["ratios"][f"{name}/{e}/floor"] == pytest.approx(sum(pairs) / 2)
            assert data[name][e]["floor_ratio_best"] == pytest.approx(pairs[0])
    idio, port = data["idiomatic_dataloader_sgd"]["epoch_2"], data["port_fit_sgd"]["epoch_2"]
    pairs = [a / b for a, b in zip(idio["samples_s"], port["samples_s"], strict=True)]
    assert data["ratios"]["idiomatic/port/epoch_2"] == pytest.approx(sum(pairs) / 2)
    by_name = {t["ratio"]: t for t in data["targets"]}
    keras = by_name["port_keras_rmsprop/epoch_2/floor"]
    assert keras["target"] == "<= 1.4" and keras["met"] == (keras["value"] <= 1.4)
    assert by_name["idiomatic/port/epoch_1"]["target"] == ">= 1.3"
    table = (tmp_path / "bench.md").read_text()
    assert "| GEMM floor" in table and "idiomatic" in table
