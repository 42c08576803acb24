"""The benchmark runs end to end on a small synthetic set and writes its JSON and table."""

from __future__ import annotations

import json
from pathlib import Path

from dl_ch2.cli import main


def test_bench_smoke(tmp_path: Path) -> None:
    rc = main(
        [
            "bench",
            "--samples",
            "1280",
            "--repeats",
            "1",
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
    table = (tmp_path / "bench.md").read_text()
    assert "| GEMM floor" in table and "idiomatic" in table
