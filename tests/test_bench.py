"""The benchmark: its ratio arithmetic on hand-made timings, its options, a tiny end-to-end run.

No speed is asserted here (targets live in the benchmark's own report, never in unit tests).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch

from dl_ch2_tools import bench
from dl_ch2_tools.cli import main

# --- the arithmetic, on timings written by hand ----------------------------------------

#: times[name][round][epoch] and the floor epoch timed right after each, 3 rounds x 2 epochs.
TIMES = {
    "book_fit": [[2.0, 3.0], [4.0, 3.0], [3.0, 3.3]],
    "idiomatic": [[6.0, 6.0], [6.0, 9.0], [6.0, 6.6]],
    "compiled_fit": [[12.0, 1.2], [11.0, 1.1], [1.5, 1.0]],
}
FLOORS = {
    "book_fit": [[1.0, 1.0], [2.0, 1.5], [1.0, 1.1]],
    "idiomatic": [[2.0, 1.0], [1.0, 1.5], [1.0, 1.1]],
    "compiled_fit": [[1.0, 1.0], [1.0, 1.0], [1.0, 1.0]],
}


def test_floor_ratios_are_medians_of_per_epoch_pairs() -> None:
    s = bench.summarize(TIMES, FLOORS, epochs=2)
    r = s["ratios"]
    # book, epoch 1: 2/1, 4/2, 3/1 -> 2, 2, 3; epoch 2: 3/1, 3/1.5, 3.3/1.1 -> 3, 2, 3
    assert r["book_fit/epoch_1/floor"] == pytest.approx(2.0)
    assert r["book_fit/epoch_2/floor"] == pytest.approx(3.0)
    assert s["candidates"]["book_fit"]["epoch_1"]["floor_ratio_rounds"] == pytest.approx(
        [2.0, 2.0, 3.0]
    )
    assert s["candidates"]["book_fit"]["epoch_2"]["floor_ratio_best"] == pytest.approx(2.0)
    # idiomatic, epoch 1: 6/2, 6/1, 6/1 -> 3, 6, 6; epoch 2: 6, 6, 6
    assert r["idiomatic/epoch_1/floor"] == pytest.approx(6.0)
    assert r["idiomatic/epoch_2/floor"] == pytest.approx(6.0)
    # raw times: median, min, max of each epoch over rounds
    assert s["candidates"]["book_fit"]["epoch_1"]["median_s"] == pytest.approx(3.0)
    assert s["candidates"]["idiomatic"]["epoch_2"]["max_s"] == pytest.approx(9.0)


def test_ratios_between_candidates_divide_floor_ratios_round_by_round() -> None:
    r = bench.summarize(TIMES, FLOORS, epochs=2)["ratios"]
    # epoch 1: 3/2, 6/2, 6/3 -> 1.5, 3, 2 -> median 2; epoch 2: 6/3, 6/2, 6/3 -> 2, 3, 2
    assert r["idiomatic/book_fit/epoch_1"] == pytest.approx(2.0)
    assert r["idiomatic/book_fit/epoch_2"] == pytest.approx(2.0)
    # compiled, epoch 2: 1.2, 1.1, 1.0 over the book's 3, 2, 3 -> 0.4, 0.55, 0.333
    assert r["compiled_fit/book_fit/epoch_2"] == pytest.approx(0.4)
    assert "book_fit/book_fit/epoch_1" not in r


def test_compile_time_is_the_first_epoch_over_the_later_ones() -> None:
    times = {"compiled_fit": [[12.0, 1.0, 2.0, 1.5], [1.5, 1.0, 1.0, 1.0]]}
    floors = {"compiled_fit": [[1.0] * 4, [1.0] * 4]}
    s = bench.summarize(times, floors, epochs=4)
    # 12 - median(1, 2, 1.5) = 10.5; 1.5 - 1 = 0.5; median of two: their mean
    assert s["compile_s"]["compiled_fit"]["samples_s"] == pytest.approx([10.5, 0.5])
    assert s["compile_s"]["compiled_fit"]["median_s"] == pytest.approx(5.5)
    assert s["ratios"]["compiled_fit/epoch_4/floor"] == pytest.approx(1.25)
    assert s["gemm_floor"]["median_s"] == pytest.approx(1.0)
    assert "book_fit" not in s["candidates"]  # no baseline: no pairwise ratios
    assert not any("/book_fit/" in k for k in s["ratios"])
    # one epoch: no later epochs to subtract, no compile time
    assert (
        bench.summarize({"compiled_fit": [[3.0]]}, {"compiled_fit": [[1.0]]}, epochs=1)["compile_s"]
        == {}
    )


def test_targets_judge_the_measured_ratios() -> None:
    results = {
        "config": {"epochs": 5},
        "ratios": {
            "idiomatic/book_fit/epoch_1": 1.6,
            "idiomatic/book_fit/epoch_5": 1.4,
            "compiled_fit/epoch_1/floor": 1.31,
            "compiled_fit/epoch_5/floor": 1.15,
            "first_example_compiled/epoch_5/floor": 1.41,
            "numpy_reference/book_fit/epoch_5": 0.9,
        },
        "graph_breaks": {"compiled_fit": 0, "first_example_compiled": 3},
        "first_compiled_fit": {"ratio": 2.5},
        "train_peak_memory": {"book": {"peak_rss_mb": 1100.0}},
    }
    met = {t["ratio"]: (t["target"], t["met"]) for t in bench.targets(results)}
    assert met == {
        "idiomatic/book_fit/epoch_1": (">= 1.5", True),
        "idiomatic/book_fit/epoch_5": (">= 1.5", False),
        "numpy_reference/book_fit/epoch_5": (">= 1.0", False),  # NumPy faster: missed
        "compiled_fit/epoch_1/floor": ("<= 1.3", False),
        "compiled_fit/epoch_5/floor": ("<= 1.15", True),
        "first_example_compiled/epoch_5/floor": ("<= 1.3", False),
        "graph breaks, compiled_fit's step": ("== 0", True),
        "first_compiled_fit: compiled epoch / eager epoch": ("<= 2.0", False),
        "dl-ch2 train peak memory, book path (MB)": ("< 1024", False),
    }
    # a train run that failed measured no memory: no verdict on it
    results["train_peak_memory"] = {"book": {"peak_rss_mb": 600.0, "returncode": 1}}
    assert not any("memory" in t["ratio"] for t in bench.targets(results))


# --- options ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "option"),
    [
        ({"repeats": 0}, "--repeats"),
        ({"epochs": 0}, "--epochs"),
        ({"epochs": 2.5}, "--epochs"),
        ({"samples": 100}, "--samples"),
        ({"only": ["book_fit", "fused"]}, "--only"),
        ({"only": []}, "--only"),
    ],
)
def test_bad_options_raise_naming_the_option_before_any_work(
    kwargs: dict[str, object], option: str, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match=option):
        bench.run_bench(out=tmp_path, include_memory=False, **kwargs)  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


def test_cli_turns_a_bad_option_into_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--repeats", "0", "--no-memory"]) == 2
    err = capsys.readouterr().err
    assert "--repeats" in err and len(err.strip().splitlines()) == 1


# --- a tiny real run ----------------------------------------------------------------------


def test_the_gemm_floor_does_the_epochs_products() -> None:
    """Hand count: 300 samples at batch 128 are 3 batches (128, 128, 44), 5 products each."""
    calls: list[tuple[int, ...]] = []
    real_mm = torch.mm

    def counting_mm(a: torch.Tensor, b: torch.Tensor, **kw: torch.Tensor) -> torch.Tensor:
        calls.append((a.shape[0], a.shape[1], b.shape[1]))
        return real_mm(a, b, **kw)

    epoch = bench.gemm_floor_epoch(torch.device("cpu"), n_samples=300)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(torch, "mm", counting_mm)
        epoch()
    assert len(calls) == 15
    assert calls[10:] == [
        (44, 784, 512),
        (44, 512, 10),
        (512, 44, 10),
        (44, 10, 512),
        (784, 44, 512),
    ]


def test_bench_smoke_eager_candidates(tmp_path: Path) -> None:
    only = "book_fit,first_example,idiomatic,numpy_reference"
    argv = ["bench", "--samples", "256", "--repeats", "2", "--epochs", "2", "--no-memory"]
    assert main([*argv, "--only", only, "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "bench.json").read_text())
    assert data["config"]["candidates"] == only.split(",")
    for name in only.split(","):
        for e in ("epoch_1", "epoch_2"):
            assert len(data["candidates"][name][e]["samples_s"]) == 2  # one per round
            assert data["ratios"][f"{name}/{e}/floor"] > 0
    assert len(data["gemm_floor"]["samples_s"]) == 4 * 2 * 2  # candidates x rounds x epochs
    assert data["naive_vs_vectorized"]["ratio"] > 10  # loops are far slower
    by_name = {t["ratio"]: t for t in data["targets"]}
    assert by_name["idiomatic/book_fit/epoch_2"]["target"] == ">= 1.5"
    table = (tmp_path / "bench.md").read_text()
    assert "| GEMM floor" in table and "idiomatic" in table and "| target |" in table


@pytest.mark.slow
def test_bench_smoke_compiled_candidate(tmp_path: Path) -> None:
    """One compiled candidate end to end: per-epoch timing through ``on_epoch_end``."""
    argv = ["bench", "--samples", "256", "--repeats", "1", "--epochs", "2", "--no-memory"]
    assert main([*argv, "--only", "compiled_fit", "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "bench.json").read_text())
    assert len(data["candidates"]["compiled_fit"]["epoch_2"]["samples_s"]) == 1
    assert len(data["compile_s"]["compiled_fit"]["samples_s"]) == 1
    assert data["warmup_s"]["compiled_fit"] > 0
    assert data["graph_breaks"]["compiled_fit"] == 0  # the book's step is one graph
    assert data["graph_breaks"]["first_example_compiled"] >= 1  # optimizer.step() breaks it
    assert "Graph breaks in one compiled step" in (tmp_path / "bench.md").read_text()


def test_the_memory_sampler_sees_the_process_tree() -> None:
    """The tree below a process includes a child it started; each has a nonzero size."""
    import os
    import subprocess
    import sys

    alone_kb, alone = bench.process_tree_memory_kb(os.getpid())
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        time.sleep(0.5)
        tree_kb, count = bench.process_tree_memory_kb(os.getpid())
        assert count >= alone + 1  # the child is in the tree
        assert alone_kb > 1000  # this interpreter and torch: > 1 MB
        assert tree_kb > 1000
        child_kb, child_count = bench.process_tree_memory_kb(child.pid)
        assert child_kb > 0 and child_count == 1
    finally:
        child.kill()
        child.wait()
    assert bench.process_tree_memory_kb(child.pid) == (0, 0)  # gone: nothing to read
