"""``dl-ch2 bench``: how fast the chapter's network trains, against the machine's GEMM floor.

All figures come from one run on the same MNIST-shaped float32 data (synthetic: 60,000
sparse images in [0, 1], so no dataset is needed). The candidates:

1. ``book_fit``: the port's ``fit``, the book's step (§2.5.3) on the from-scratch model, SGD;
2. ``compiled_fit``: the same ``fit(..., compile=True)``: ``torch.compile`` of that step;
3. ``first_example``: the Keras-faithful first example (§2.1), RMSprop, reshuffled;
4. ``first_example_compiled``: the same with ``compile=True``;
5. ``idiomatic``: the loop most PyTorch tutorials write: ``nn.Sequential``,
   ``DataLoader(TensorDataset, batch_size=128, shuffle=True)``, ``torch.optim.SGD``;
6. ``numpy_reference``: the conformance suite's NumPy ``fit`` (CPU only).

The yardstick, the **GEMM floor**, is exactly the matrix products one epoch of 784-512-10
at batch 128 needs (forward, weight gradients, the hidden layer's input gradient), back to
back into preallocated buffers: no training loop can do less work.

Timing is interleaved. Each round builds fresh models and runs every candidate for
``epochs`` epochs (one call per epoch, or for the compiled candidates one ``fit`` of
``epochs`` epochs); after each candidate
epoch the floor is timed, and that epoch's ratio is its time over the floor's just after
it. A ratio between two candidates is the ratio of their floor ratios in the same round
and epoch, so the machine's drift cancels. Reported ratios are medians over rounds; the
order of the candidates rotates from round to round.

A compiled fit reuses what an earlier one compiled (``dl_ch2._compile``), so the process's
first compile happens in the warm-up before the rounds and is reported on its own; a
round's first compiled epoch minus the median of its later epochs is what a later compiled
run still pays at its start. ``graph_breaks`` counts the graphs of one compiled step with a
counting backend (torch.compile's public backend interface); ``first_compiled_fit`` times,
in a fresh process with inductor's disk caches warm, an eager epoch and then the first
compiled fit (compile included), as a user's second run.

Memory: the peak of ``dl-ch2 train --epochs 1`` (a child process) on the book path, and
separately with ``--compile``, where torch's compile workers are processes of their own: the
whole process tree's RSS is sampled and summed (an upper bound: shared pages count once per
process) next to the largest single process's ``ru_maxrss``.

On CUDA the same epochs run with the data resident on the GPU. Writes ``bench.json`` and
``bench.md`` into ``out``.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import torch
from torch import nn

from conformance.atomic import atomic_write
from dl_ch2 import __version__
from dl_ch2._checks import resolve_device
from dl_ch2._compile import use_backend
from dl_ch2.first_example import (
    build_first_example_model,
    keras_rmsprop,
    train_first_example,
)
from dl_ch2.naive_model import build_naive_model
from dl_ch2.tensor_operations import naive_add, naive_relu
from dl_ch2.training_loop import fit
from dl_ch2_tools.options import OptionError

N, D, H, C, BATCH = 60000, 784, 512, 10, 128

#: A candidate: given the data, a seed, the number of epochs and ``after_epoch`` (which
#: the harness times and follows by a floor epoch), train for that many epochs, calling
#: ``after_epoch()`` at the end of each.
Candidate = Callable[[torch.Tensor, torch.Tensor, int, int, Callable[[], None]], None]


def synthetic_mnist(
    device: torch.device, seed: int = 0, n: int = N
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` MNIST-like images: ~19% of pixels lit, values in [0, 1]; random labels."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, D, generator=g) * (torch.rand(n, D, generator=g) < 0.19)
    y = torch.randint(0, C, (n,), generator=g)
    return x.to(device), y.to(device)


def cpu_model() -> str:
    """The CPU's model name (platform.processor() is empty on most Linux systems)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[], Any], device: torch.device) -> float:
    """Seconds for one call, the device synchronised before and after."""
    _sync(device)
    t0 = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - t0


def _stats(samples: list[float]) -> dict[str, Any]:
    return {
        "median_s": statistics.median(samples),
        "min_s": min(samples),
        "max_s": max(samples),
        "samples_s": samples,
    }


def gemm_floor_epoch(device: torch.device, n_samples: int = N) -> Callable[[], None]:
    """The products of one epoch at batch 128 (a last, shorter batch included), preallocated."""
    g = torch.Generator().manual_seed(1)
    full = torch.rand(n_samples, D, generator=g).to(device)
    w1, w2 = torch.rand(D, H, generator=g).to(device), torch.rand(H, C, generator=g).to(device)
    h = torch.empty(BATCH, H, device=device)
    z2 = torch.empty(BATCH, C, device=device)
    g2 = torch.rand(BATCH, C, generator=g).to(device)
    dh = torch.empty(BATCH, H, device=device)
    dw1, dw2 = torch.empty(D, H, device=device), torch.empty(H, C, device=device)
    g1 = torch.rand(BATCH, H, generator=g).to(device)

    def epoch() -> None:
        for start in range(0, n_samples, BATCH):
            xb = full[start : start + BATCH]
            n = len(xb)
            torch.mm(xb, w1, out=h[:n])  # forward, layer 1
            torch.mm(h[:n], w2, out=z2[:n])  # forward, layer 2
            torch.mm(h[:n].T, g2[:n], out=dw2)  # dL/dW2
            torch.mm(g2[:n], w2.T, out=dh[:n])  # dL/dh (the hidden layer's input gradient)
            torch.mm(xb.T, g1[:n], out=dw1)  # dL/dW1

    return epoch


def book_fit(
    x: torch.Tensor, y: torch.Tensor, seed: int, epochs: int, after_epoch: Callable[[], None]
) -> None:
    """The port's ``fit`` (the book's step, SGD, lr 1e-3), one call per epoch."""
    model = build_naive_model(device=x.device, generator=torch.Generator().manual_seed(seed))
    for _ in range(epochs):
        fit(model, x, y, epochs=1, print_fn=None, progress=False)
        after_epoch()


def compiled_fit(
    x: torch.Tensor, y: torch.Tensor, seed: int, epochs: int, after_epoch: Callable[[], None]
) -> None:
    """``fit(..., compile=True)``: one run of ``epochs`` epochs (it compiles once, at its start)."""
    model = build_naive_model(device=x.device, generator=torch.Generator().manual_seed(seed))
    fit(
        model,
        x,
        y,
        epochs=epochs,
        print_fn=None,
        progress=False,
        compile=True,
        on_epoch_end=lambda _epoch, _losses: after_epoch(),
    )


def _keras(x: torch.Tensor, seed: int) -> tuple[nn.Module, torch.optim.Optimizer, torch.Generator]:
    model = build_first_example_model(
        device=x.device, generator=torch.Generator().manual_seed(seed)
    )
    opt = keras_rmsprop(model.parameters())
    return model, opt, torch.Generator().manual_seed(seed + 1)


def first_example(
    x: torch.Tensor, y: torch.Tensor, seed: int, epochs: int, after_epoch: Callable[[], None]
) -> None:
    """The Keras-faithful first example (RMSprop as Keras 2.6, reshuffled), one call per epoch."""
    model, opt, g = _keras(x, seed)
    for _ in range(epochs):
        train_first_example(model, x, y, epochs=1, optimizer=opt, generator=g, print_fn=None)
        after_epoch()


def first_example_compiled(
    x: torch.Tensor, y: torch.Tensor, seed: int, epochs: int, after_epoch: Callable[[], None]
) -> None:
    """The first example with ``compile=True``: one run of ``epochs`` epochs."""
    model, opt, g = _keras(x, seed)
    train_first_example(
        model,
        x,
        y,
        epochs=epochs,
        optimizer=opt,
        generator=g,
        compile=True,
        on_epoch_end=lambda _epoch, _loss: after_epoch(),
        print_fn=None,
    )


def idiomatic(
    x: torch.Tensor, y: torch.Tensor, seed: int, epochs: int, after_epoch: Callable[[], None]
) -> None:
    """The loop most PyTorch tutorials write, as a baseline."""
    from torch.utils.data import DataLoader, TensorDataset

    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(D, H), nn.ReLU(), nn.Linear(H, C)).to(x.device)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    loader = DataLoader(
        TensorDataset(x, y),
        batch_size=BATCH,
        shuffle=True,
        generator=torch.Generator().manual_seed(seed),
    )
    for _ in range(epochs):
        for xb, yb in loader:
            opt.zero_grad()
            loss = loss_fn(model(xb), yb)
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
        after_epoch()


def numpy_reference(
    x: torch.Tensor, y: torch.Tensor, seed: int, epochs: int, after_epoch: Callable[[], None]
) -> None:
    """The NumPy reference's ``fit`` (float32), one call per epoch."""
    import conformance.reference as ref

    xn, yn = x.cpu().numpy(), y.cpu().numpy()
    model = ref.build_naive_model(dtype=np.float32, rng=np.random.default_rng(seed))
    for _ in range(epochs):
        ref.fit(model, xn, yn, epochs=1, print_fn=None)
        after_epoch()


#: Every candidate, in the table's order, with its label.
CANDIDATES: dict[str, tuple[Candidate, str]] = {
    "book_fit": (book_fit, "dl_ch2 fit, the book's step (default)"),
    "compiled_fit": (compiled_fit, "dl_ch2 fit, compile=True"),
    "first_example": (first_example, "first example, Keras-faithful (RMSprop)"),
    "first_example_compiled": (first_example_compiled, "first example, compile=True"),
    "idiomatic": (idiomatic, "idiomatic nn.Sequential + DataLoader(shuffle) + SGD"),
    "numpy_reference": (numpy_reference, "NumPy reference fit"),
}
#: Candidates that compile at the start of each run (their first epoch includes it).
COMPILED = frozenset({"compiled_fit", "first_example_compiled"})
#: What the other candidates are compared with, pairwise.
BASELINE = "book_fit"


def naive_vs_vectorized(repeats: int = 20) -> dict[str, Any]:
    """The book's timing of §2.3.1 on (20, 100) matrices, scaled to its 1,000 repetitions."""
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(20, 100, generator=g), torch.rand(20, 100, generator=g)
    t0 = time.perf_counter()
    for _ in range(1000):
        torch.relu(x + y)
    vectorized = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(repeats):
        naive_relu(naive_add(x, y))
    naive = (time.perf_counter() - t0) * 1000 / repeats
    return {
        "vectorized_1000_s": vectorized,
        "naive_1000_s_estimated": naive,
        "ratio": naive / vectorized,
        "book": {"vectorized_s": 0.02, "naive_s": 2.45},
    }


def graph_breaks(device: torch.device) -> dict[str, int]:
    """Graph breaks in one compiled step of each compiled candidate (one batch shape).

    Counted through ``torch.compile``'s public backend interface: a backend callable that
    counts the graphs it is given and runs each as traced; a step in ``g`` graphs has
    ``g - 1`` breaks. Nothing compiled here is kept (``use_backend`` resets on the way out).
    """
    x, y = synthetic_mnist(device, n=2 * BATCH)
    counts: dict[str, int] = {}
    for name in sorted(COMPILED):
        graphs: list[int] = []

        def counting(gm: torch.fx.GraphModule, _example: Any, graphs: list[int] = graphs) -> Any:
            graphs.append(len(gm.graph.nodes))
            return gm.forward

        with use_backend(counting):
            CANDIDATES[name][0](x, y, 0, 1, lambda: None)
        counts[name] = len(graphs) - 1
    return counts


FRESH_PROCESS = """
import json, sys, time, torch
from dl_ch2_tools.bench import book_fit, compiled_fit, synthetic_mnist
x, y = synthetic_mnist(torch.device(sys.argv[1]), n=int(sys.argv[2]))
took = []
for run in (book_fit, compiled_fit):
    t0 = time.perf_counter()
    run(x, y, 0, 1, lambda: None)
    took.append(time.perf_counter() - t0)
print(json.dumps({"eager_epoch_s": took[0], "first_compiled_epoch_s": took[1]}))
"""


def first_compiled_fit(device: torch.device, samples: int, timeout: int = 900) -> dict[str, Any]:
    """A user's second run: in a fresh process (inductor's disk caches warm from this one),
    one eager epoch, then the process's first ``fit(..., compile=True)`` of one epoch."""
    done = subprocess.run(
        [sys.executable, "-c", FRESH_PROCESS, str(device), str(samples)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode:
        return {"note": f"failed: {done.stderr.strip().splitlines()[-1:]}"[:300]}
    out: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    out["ratio"] = out["first_compiled_epoch_s"] / out["eager_epoch_s"]
    return out


# --- memory --------------------------------------------------------------------------


def process_tree_memory_kb(root: int) -> tuple[int, int]:
    """(resident set size in kB, process count) of ``root`` and every process below it.

    ``psutil``: a process that ends while it is read counts 0; a ``root`` already gone is
    ``(0, 0)``.
    """
    try:
        top = psutil.Process(root)
        tree = [top, *top.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0, 0
    total = 0
    for proc in tree:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            total += proc.memory_info().rss
    return total // 1024, len(tree)


def peak_memory_of_train(
    extra_args: Sequence[str] = (), timeout: int = 900, interval_s: float = 0.1
) -> dict[str, Any]:
    """Peak memory of ``dl-ch2 train --epochs 1 --no-figures [extra_args]`` (needs MNIST).

    ``largest_process_mb``: ``ru_maxrss`` of the child and its waited-for descendants (the
    largest one of them). ``tree_peak_mb``: the largest sum of RSS over the whole process
    tree (compile workers included), sampled every ``interval_s``: an upper bound, since
    pages a worker shares with its parent count in both.
    """
    try:
        from dl_ch2_tools.mnist import fetch_mnist

        fetch_mnist(download=False)
    except Exception as exc:
        return {"peak_rss_mb": None, "note": f"skipped: MNIST not available ({exc})"[:200]}
    scratch = Path(tempfile.mkdtemp(prefix="dl-ch2-bench-train-"))
    try:
        return _peak_memory(scratch, extra_args, timeout, interval_s)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _peak_memory(
    scratch: Path, extra_args: Sequence[str], timeout: int, interval_s: float
) -> dict[str, Any]:
    out = scratch / "run"  # a fresh run folder: train refuses to overwrite an earlier run
    argv = ["train", "--epochs", "1", "--no-figures", "--out", str(out), *extra_args]
    err = scratch / "stderr.txt"
    with err.open("w") as err_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "dl_ch2_tools", *argv],
            stdout=subprocess.DEVNULL,
            stderr=err_file,
        )
    peak_kb, peak_procs = 0, 0
    done = threading.Event()
    deadline = time.monotonic() + timeout

    def sample() -> None:
        nonlocal peak_kb, peak_procs
        while not done.is_set():
            total, count = process_tree_memory_kb(proc.pid)
            if total > peak_kb:
                peak_kb, peak_procs = total, count
            if time.monotonic() > deadline:
                proc.kill()
            done.wait(interval_s)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    # wait4: this child's own rusage (ru_maxrss: the largest of it and what it waited for)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    done.set()
    sampler.join()
    stderr = err.read_text(errors="replace")
    largest_kb = usage.ru_maxrss
    return {
        "command": "dl-ch2 " + " ".join(a for a in argv if a != str(out) and a != "--out"),
        "returncode": proc.returncode,
        "stderr_tail": stderr.strip().splitlines()[-1:] if proc.returncode else [],
        "largest_process_mb": largest_kb / 1024,
        "tree_peak_mb": peak_kb / 1024,
        "tree_processes_at_peak": peak_procs,
        "peak_rss_mb": max(largest_kb / 1024, peak_kb / 1024),
    }


# --- timing ---------------------------------------------------------------------------


Rounds = tuple[
    dict[str, list[list[float]]], dict[str, list[list[float]]], dict[str, float], dict[str, Any]
]


def _warm_up(
    floor_epoch: Callable[[], None],
    candidates: dict[str, Candidate],
    x: torch.Tensor,
    y: torch.Tensor,
    dev: torch.device,
) -> dict[str, float]:
    """One floor epoch and one one-epoch run of each candidate (the process's first compile
    for a compiled one): seconds per candidate."""
    warmup: dict[str, float] = {}
    floor_epoch()  # kernels, allocator, caches
    for name, run in candidates.items():
        _sync(dev)
        t0 = time.perf_counter()
        run(x, y, 10_000, 1, lambda: None)
        _sync(dev)
        warmup[name] = time.perf_counter() - t0
    return warmup


def _one_run(
    run: Candidate,
    floor_epoch: Callable[[], None],
    x: torch.Tensor,
    y: torch.Tensor,
    rep: int,
    epochs: int,
    dev: torch.device,
) -> tuple[list[float], list[float], list[float]]:
    """One candidate run of ``epochs`` epochs, each followed by a floor epoch: wall seconds
    of the epochs and of the floors, and each epoch's CPU time over its floor's (the
    process's CPU time, every thread; compile workers are processes of their own)."""
    t_epochs: list[float] = []
    t_floors: list[float] = []
    cpu_ratios: list[float] = []
    start = [0.0, 0.0]

    def after_epoch() -> None:
        _sync(dev)
        t_epochs.append(time.perf_counter() - start[0])
        cpu_epoch = time.process_time() - start[1]
        cpu0 = time.process_time()
        t_floors.append(_timed(floor_epoch, dev))
        cpu_ratios.append(cpu_epoch / max(time.process_time() - cpu0, 1e-9))
        start[:] = [time.perf_counter(), time.process_time()]

    _sync(dev)
    start[:] = [time.perf_counter(), time.process_time()]
    run(x, y, rep, epochs, after_epoch)
    return t_epochs, t_floors, cpu_ratios


def run_rounds(
    floor_epoch: Callable[[], None],
    candidates: dict[str, Candidate],
    x: torch.Tensor,
    y: torch.Tensor,
    repeats: int,
    epochs: int,
    dev: torch.device,
    progress: bool = True,
) -> Rounds:
    """Interleaved timing: each candidate epoch, then a floor epoch, round after round.

    Returns ``times[name][round][epoch]``, ``floors[name][round][epoch]`` (the floor epoch
    timed right after that candidate epoch), each candidate's warm-up time (a one-epoch run
    before the rounds: the process's first compile) and, per candidate and epoch, the
    median over rounds of the CPU-time floor ratio (``cpu[name]["epoch_{e}"]``).
    """
    warmup = _warm_up(floor_epoch, candidates, x, y, dev)
    times: dict[str, list[list[float]]] = {n: [] for n in candidates}
    floors: dict[str, list[list[float]]] = {n: [] for n in candidates}
    cpu: dict[str, list[list[float]]] = {n: [] for n in candidates}
    names = list(candidates)
    for rep in range(repeats):
        for name in names[rep % len(names) :] + names[: rep % len(names)]:
            t_epochs, t_floors, cpu_ratios = _one_run(
                candidates[name], floor_epoch, x, y, rep, epochs, dev
            )
            if len(t_epochs) != epochs:
                raise RuntimeError(f"bench candidate {name} ran {len(t_epochs)} of {epochs} epochs")
            times[name].append(t_epochs)
            floors[name].append(t_floors)
            cpu[name].append(cpu_ratios)
        if progress:
            print(f"bench: round {rep + 1}/{repeats} done", file=sys.stderr, flush=True)
    cpu_medians = {
        n: {f"epoch_{e + 1}": statistics.median(r[e] for r in cpu[n]) for e in range(epochs)}
        for n in names
    }
    return times, floors, warmup, cpu_medians


def summarize(
    times: dict[str, list[list[float]]],
    floors: dict[str, list[list[float]]],
    epochs: int,
    baseline: str = BASELINE,
) -> dict[str, Any]:
    """Ratios from raw timings (``[round][epoch]`` lists), all medians over rounds.

    - ``{name}/epoch_{e}/floor``: the candidate's epoch over the floor epoch timed after it;
    - ``{name}/{baseline}/epoch_{e}``: the candidate's floor ratio over the baseline's, in
      the same round and epoch (how many times slower than the baseline);
    - ``compile_s[name]`` for a compiled candidate with ``epochs >= 2``: per round, its first
      epoch minus the median of its later epochs.

    Plus, per candidate and epoch, the stats of the times and of the per-round floor ratios.
    """
    picks = {"epoch_1": 0, f"epoch_{epochs}": epochs - 1}
    ratios: dict[str, float] = {}
    per: dict[str, dict[str, Any]] = {}
    floor_ratio: dict[str, dict[str, list[float]]] = {}
    for name in times:
        per[name] = {}
        floor_ratio[name] = {}
        for e, i in picks.items():
            rounds = [t[i] / f[i] for t, f in zip(times[name], floors[name], strict=True)]
            floor_ratio[name][e] = rounds
            ratios[f"{name}/{e}/floor"] = statistics.median(rounds)
            per[name][e] = {
                **_stats([t[i] for t in times[name]]),
                "floor_ratio_rounds": rounds,
                "floor_ratio_best": min(rounds),
            }
    if baseline in times:
        for name in times:
            if name == baseline:
                continue
            for e in picks:
                pairs = zip(floor_ratio[name][e], floor_ratio[baseline][e], strict=True)
                ratios[f"{name}/{baseline}/{e}"] = statistics.median(a / b for a, b in pairs)
    compile_s: dict[str, dict[str, Any]] = {}
    if epochs >= 2:
        for name in times:
            if name in COMPILED:
                compile_s[name] = _stats([t[0] - statistics.median(t[1:]) for t in times[name]])
    floor_all = [f for name in floors for rnd in floors[name] for f in rnd]
    return {
        "ratios": ratios,
        "candidates": per,
        "compile_s": compile_s,
        "gemm_floor": _stats(floor_all),
    }


#: The issue's targets: (ratio key, comparison, bound, what it says). ``{E}``: last epoch.
TARGETS: list[tuple[str, str, float, str]] = [
    ("idiomatic/book_fit/epoch_1", ">=", 1.5, "book path >= 1.5x faster than idiomatic"),
    ("idiomatic/book_fit/epoch_{E}", ">=", 1.5, "book path >= 1.5x faster than idiomatic"),
    ("numpy_reference/book_fit/epoch_1", ">=", 1.0, "book path faster than the NumPy reference"),
    (
        "numpy_reference/book_fit/epoch_{E}",
        ">=",
        1.0,
        "book path faster than the NumPy reference",
    ),
    (
        "compiled_fit/epoch_1/floor",
        "<=",
        1.3,
        "a compiled fit after the first, epoch 1, <= 1.3x the floor",
    ),
    ("compiled_fit/epoch_{E}/floor", "<=", 1.15, "compiled fit <= 1.15x the GEMM floor"),
    (
        "first_example_compiled/epoch_{E}/floor",
        "<=",
        1.3,
        "first example, compiled, <= 1.3x the floor",
    ),
]
TRAIN_RSS_TARGET_MB = 1024.0


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target with the measured value and whether it was met."""
    e = results["config"]["epochs"]
    out = []
    for key, op, bound, what in TARGETS:
        k = key.replace("{E}", str(e))
        value = results["ratios"].get(k)
        if value is None:
            continue
        met = value <= bound if op == "<=" else value >= bound
        out.append(
            {"ratio": k, "what": what, "target": f"{op} {bound}", "value": value, "met": met}
        )
    out += _other_targets(results)
    book = results.get("train_peak_memory", {}).get("book", {})
    peak = book.get("peak_rss_mb") if book.get("returncode", 0) == 0 else None
    if peak is not None:  # a run that failed measured nothing
        out.append(
            {
                "ratio": "dl-ch2 train peak memory, book path (MB)",
                "what": "peak memory < 1 GB",
                "target": f"< {TRAIN_RSS_TARGET_MB:.0f}",
                "value": peak,
                "met": peak < TRAIN_RSS_TARGET_MB,
            }
        )
    return out


def _other_targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The compiled book step's graph breaks (0) and a fresh process's first compiled fit
    (<= 2x an eager epoch), where measured."""
    out = []
    breaks = results.get("graph_breaks", {}).get("compiled_fit")
    if breaks is not None:
        out.append(
            {
                "ratio": "graph breaks, compiled_fit's step",
                "what": "one graph per compiled book step",
                "target": "== 0",
                "value": float(breaks),
                "met": breaks == 0,
            }
        )
    fresh = results.get("first_compiled_fit", {}).get("ratio")
    if fresh is not None:
        out.append(
            {
                "ratio": "first_compiled_fit: compiled epoch / eager epoch",
                "what": "a fresh process's first compiled fit (compile included) <= 2x eager",
                "target": "<= 2.0",
                "value": fresh,
                "met": fresh <= 2.0,
            }
        )
    grade = results.get("grade", {}).get("median_wall_s")
    if grade is not None:
        out.append(
            {
                "ratio": "grade numpy, median wall s",
                "what": "a grade of the NumPy reference <= 4 s (issue 31 item 4)",
                "target": "<= 4",
                "value": grade,
                "met": grade <= 4.0,
            }
        )
    return out


def _check_options(repeats: int, epochs: int, samples: int, only: Sequence[str] | None) -> None:
    """The bench's options, checked here only (the CLI passes them through): OptionError."""
    for name, value in (("repeats", repeats), ("epochs", epochs)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise OptionError(f"--{name}", f"must be an integer >= 1, got {value!r}")
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < BATCH:
        raise OptionError(
            "--samples", f"must be an integer >= {BATCH} (one batch), got {samples!r}"
        )
    if only is not None:
        unknown = [n for n in only if n not in CANDIDATES]
        if unknown or not only:
            raise OptionError(
                "--only",
                f"must name candidates among {', '.join(CANDIDATES)}, "
                f"got {', '.join(only) or 'none'}",
            )


def _header(
    dev: torch.device, samples: int, repeats: int, epochs: int, chosen: list[str]
) -> dict[str, Any]:
    """The machine, the versions and the configuration of a run."""
    return {
        "machine": {
            "platform": platform.platform(),
            "processor": cpu_model(),
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "load_average_at_start": os.getloadavg(),
            "device": str(dev),
            "gpu": torch.cuda.get_device_name(dev) if dev.type == "cuda" else None,
        },
        "versions": {
            "dl_ch2": __version__,
            "torch": torch.__version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
        },
        "config": {
            "samples": samples,
            "batch_size": BATCH,
            "repeats": repeats,
            "epochs": epochs,
            "candidates": chosen,
        },
    }


def grade_time(adapter: str = "numpy", repeats: int = 1, timeout: int = 600) -> dict[str, Any]:
    """Wall and CPU seconds (the grade's whole process tree: ``RUSAGE_CHILDREN``) of
    ``python -m conformance grade ADAPTER``, each of ``repeats`` runs; medians reported."""
    import resource

    walls: list[float] = []
    cpus: list[float] = []
    for _ in range(repeats):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "conformance", "grade", adapter],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        walls.append(time.perf_counter() - t0)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
        if done.returncode:
            return {"adapter": adapter, "note": f"exit {done.returncode}", "wall_s": walls}
    return {
        "adapter": adapter,
        "median_wall_s": statistics.median(walls),
        "median_cpu_s": statistics.median(cpus),
        "wall_s": walls,
        "cpu_s": cpus,
    }


def _time_candidates(
    dev: torch.device, samples: int, repeats: int, epochs: int, chosen: list[str]
) -> dict[str, Any]:
    """Graph breaks, then the interleaved rounds against the floor, summarized."""
    results: dict[str, Any] = {}
    if COMPILED & set(chosen):  # before the rounds: it drops what torch compiled
        results["graph_breaks"] = graph_breaks(dev)
    x, y = synthetic_mnist(dev, n=samples)
    floor_epoch = gemm_floor_epoch(dev, samples)
    started = time.perf_counter()
    times, floors, warmup, cpu = run_rounds(
        floor_epoch, {n: CANDIDATES[n][0] for n in chosen}, x, y, repeats, epochs, dev
    )
    results["timing_s"] = time.perf_counter() - started
    summary = summarize(times, floors, epochs)
    results.update(summary)
    results["warmup_s"] = warmup
    results["cpu_floor_ratios"] = cpu
    results["ratio_method"] = (
        "per round: each candidate epoch over the GEMM floor epoch timed right after it; "
        "between candidates, the ratio of their floor ratios in the same round and epoch; "
        "medians over rounds (the same in process CPU time: cpu_floor_ratios)"
    )
    if BASELINE in summary["candidates"]:
        results["samples_per_second_book"] = (
            samples / summary["candidates"][BASELINE]["epoch_1"]["median_s"]
        )
    return results


def _extras(
    dev: torch.device, samples: int, chosen: list[str], include_memory: bool
) -> dict[str, Any]:
    """What runs in processes of its own (skipped by ``include_memory=False``): peak memory
    of ``dl-ch2 train``, a fresh process's first compiled fit, a grade's time."""
    out: dict[str, Any] = {}
    if dev.type == "cpu":
        out["naive_vs_vectorized"] = naive_vs_vectorized()
    if not include_memory:
        return out
    if dev.type == "cpu":
        out["train_peak_memory"] = {
            "book": peak_memory_of_train(),
            "compiled": peak_memory_of_train(["--compile"]),
        }
        out["grade"] = grade_time("numpy")
    if "compiled_fit" in chosen:
        out["first_compiled_fit"] = first_compiled_fit(dev, samples)
    return out


def run_bench(
    device: str = "cpu",
    repeats: int = 5,
    epochs: int = 5,
    out: Path = Path("bench-out"),
    include_memory: bool = True,
    samples: int = N,
    only: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Run the benchmark; write ``out/bench.json`` and ``out/bench.md``; return the results.

    Bad options raise ValueError naming the option, before any work.
    """
    _check_options(repeats, epochs, samples, only)
    try:
        dev = resolve_device(device)
    except ValueError as exc:
        raise OptionError("--device", str(exc)) from None
    chosen = [n for n in CANDIDATES if only is None or n in only]
    if dev.type != "cpu" and "numpy_reference" in chosen:
        chosen.remove("numpy_reference")
    results = _header(dev, samples, repeats, epochs, chosen)
    results.update(_time_candidates(dev, samples, repeats, epochs, chosen))
    results["machine"]["load_average_at_end"] = os.getloadavg()
    results.update(_extras(dev, samples, chosen, include_memory))
    results["targets"] = targets(results)
    md = markdown_table(results)
    atomic_write(out / "bench.json", (json.dumps(results, indent=2) + "\n").encode())
    atomic_write(out / "bench.md", md.encode())
    print(md)
    return results


def _compile_lines(r: dict[str, Any]) -> list[str]:
    """Compile time (the process's first compile; a later run's first epoch over its later
    ones), graph breaks and a fresh process's first compiled fit, as Markdown bullets."""
    lines = []
    for key, c in r.get("compile_s", {}).items():
        warm = r.get("warmup_s", {}).get(key)
        lines.append(
            f"- Compile time, {CANDIDATES[key][1]}: the process's first run, one epoch, "
            + (f"{warm:.1f} s in all" if warm else "not measured")
            + f"; later runs reuse what it compiled (their first epoch minus their later "
            f"epochs' median: {c['median_s']:.2f} s median, min {c['min_s']:.2f}, "
            f"max {c['max_s']:.2f})."
        )
    for key, breaks in r.get("graph_breaks", {}).items():
        lines.append(
            f"- Graph breaks in one compiled step, {CANDIDATES[key][1]}: {breaks} "
            f"({breaks + 1} graph{'s' if breaks else ''}; counted by a counting backend)."
        )
    fresh = r.get("first_compiled_fit")
    if fresh:
        lines.append(
            "- A fresh process's first `fit(..., compile=True)`, one epoch, compile included "
            "(inductor's disk caches warm, as a user's second run): "
            + (
                f"{fresh['first_compiled_epoch_s']:.1f} s against {fresh['eager_epoch_s']:.1f}"
                f" s for an eager epoch in the same process ({fresh['ratio']:.2f}x)."
                if "ratio" in fresh
                else fresh.get("note", "not measured") + "."
            )
        )
    return lines


def _machine_line(r: dict[str, Any]) -> str:
    m = r["machine"]
    return (
        f"Machine: {m['gpu'] or m['processor']} ({m['platform']}), {m['cpu_count']} CPUs, "
        f"torch {r['versions']['torch']} ({m['torch_threads']} threads), device {m['device']}; "
        f"load average {m['load_average_at_start'][0]:.2f} at start, "
        f"{m.get('load_average_at_end', (float('nan'),))[0]:.2f} at end; "
        f"{r['config']['repeats']} rounds of {r['config']['epochs']} epochs, "
        f"{r['config']['samples']:,} samples."
    )


def _timing_rows(r: dict[str, Any]) -> list[str]:
    """The table of epochs: wall seconds, and the floor ratios in wall and CPU time."""
    e_last = f"epoch_{r['config']['epochs']}"
    fl = r["gemm_floor"]
    cpu = r.get("cpu_floor_ratios", {})
    lines = [
        "| what | epoch | median s | min s | max s | x GEMM floor (median) | rounds: min-max "
        "| x floor, CPU time |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
        f"| GEMM floor (the epoch's matrix products) | all | {fl['median_s']:.3f} | "
        f"{fl['min_s']:.3f} | {fl['max_s']:.3f} | 1.00 | - | 1.00 |",
    ]
    for key, (_, label) in CANDIDATES.items():
        for e in dict.fromkeys(("epoch_1", e_last)) if key in r["candidates"] else ():
            s = r["candidates"][key][e]
            note = " (incl. compile)" if key in COMPILED and e == "epoch_1" else ""
            rounds = s["floor_ratio_rounds"]
            in_cpu = cpu.get(key, {}).get(e)
            lines.append(
                f"| {label} | {e.split('_')[1]}{note} | {s['median_s']:.3f} | {s['min_s']:.3f} | "
                f"{s['max_s']:.3f} | {r['ratios'][f'{key}/{e}/floor']:.2f} | "
                f"{min(rounds):.2f}-{max(rounds):.2f} | "
                + ("-" if in_cpu is None else f"{in_cpu:.2f}")
                + " |"
            )
    return lines


def _pair_lines(r: dict[str, Any]) -> list[str]:
    """Each candidate over the book path, per round, medians."""
    e_last = f"epoch_{r['config']['epochs']}"
    ratios = r["ratios"]
    lines = []
    for key in r["candidates"]:
        parts = [
            f"{ratios[f'{key}/{BASELINE}/{e}']:.2f} (epoch {e[6:]})"
            for e in dict.fromkeys(("epoch_1", e_last))
            if f"{key}/{BASELINE}/{e}" in ratios
        ]
        if parts and key != BASELINE:
            lines.append(f"- {CANDIDATES[key][1]} / book path: {', '.join(parts)}.")
    return lines


def _memory_lines(r: dict[str, Any]) -> list[str]:
    lines = []
    for path, mem in r.get("train_peak_memory", {}).items():
        if mem.get("peak_rss_mb") is None:
            lines.append(f"- Peak memory of `dl-ch2 train` ({path}): {mem.get('note')}.")
            continue
        failed = f", exit {mem['returncode']}: {mem['stderr_tail']}" if mem["returncode"] else ""
        lines.append(
            f"- Peak memory of `{mem['command']}`: process tree {mem['tree_peak_mb']:.0f} MB "
            f"(RSS summed over {mem['tree_processes_at_peak']} processes), largest process "
            f"{mem['largest_process_mb']:.0f} MB (ru_maxrss){failed}."
        )
    return lines


def _other_lines(r: dict[str, Any]) -> list[str]:
    """Throughput, naive loops, the grade's time."""
    lines = []
    if "samples_per_second_book" in r:
        lines.append(f"- Book path throughput: {r['samples_per_second_book']:,.0f} samples/s.")
    if "naive_vs_vectorized" in r:
        nv = r["naive_vs_vectorized"]
        lines.append(
            f"- Naive loops vs vectorized (relu(x + y) on (20, 100), 1,000 times): "
            f"{nv['naive_1000_s_estimated']:.2f} s vs {nv['vectorized_1000_s']:.3f} s "
            f"({nv['ratio']:,.0f}x; the book: 2.45 s vs 0.02 s)."
        )
    grade = r.get("grade")
    if grade:
        lines.append(
            f"- `python -m conformance grade {grade['adapter']}`: "
            + (
                f"{grade['median_wall_s']:.1f} s wall, {grade['median_cpu_s']:.1f} s CPU "
                "(the process tree)."
                if "median_wall_s" in grade
                else f"{grade.get('note')}."
            )
        )
    return lines


def markdown_table(r: dict[str, Any]) -> str:
    """The results as Markdown: machine, timings, ratios, compile time, memory, targets."""
    lines = [_machine_line(r), "", *_timing_rows(r), "", *_pair_lines(r)]
    lines += _compile_lines(r) + _other_lines(r) + _memory_lines(r)
    lines.append(
        "- Ratios: each candidate epoch over the GEMM floor epoch timed right after it, "
        "median over rounds; between candidates, the ratio of their floor ratios in the same "
        "round. Targets are judged on the medians. The last column: the same ratio in the "
        "process's CPU time (all threads), which a loaded machine disturbs less."
    )
    if r.get("targets"):
        lines += ["", "| target | measured | bound | met |", "| --- | --- | --- | --- |"]
        for t in r["targets"]:
            lines.append(
                f"| {t['what']} (`{t['ratio']}`) | {t['value']:.2f} | {t['target']} | "
                f"{'yes' if t['met'] else 'NO'} |"
            )
    return "\n".join(lines) + "\n"
