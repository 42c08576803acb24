"""fit(compile=True) and train_first_example(compile=True): torch.compile of the book's step.

Compiling costs seconds, so these tests are few and marked slow. Expected values come from
the NumPy reference.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from test_first_example import TorchPermutations, _toy
from test_first_example import reference_twin as first_example_twin
from test_training_loop import QUIET, reference_twin, small_model, synthetic, weights_np

import conformance.reference as ref
import dl_ch2._compile as compile_module
from dl_ch2 import build_first_example_model, fit, train_first_example

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def graphs() -> Iterator[list[int]]:
    """Every graph torch.compile hands its backend from here on, by node count: a counting
    backend (public API: a callable backend) that runs the graph as traced, no inductor."""
    compiled_graphs: list[int] = []

    def counting(gm: torch.fx.GraphModule, _example: object) -> object:
        compiled_graphs.append(len(gm.graph.nodes))
        return gm.forward

    with compile_module.use_backend(counting):
        yield compiled_graphs


def test_a_second_compiled_fit_of_the_same_structure_compiles_nothing(graphs: list[int]) -> None:
    x, y = synthetic(64, dtype=torch.float32)
    first, second = small_model(dtype=torch.float32), small_model(dtype=torch.float32, seed=5)
    fit(first, x, y, epochs=1, batch_size=16, learning_rate=0.05, compile=True, **QUIET)
    assert len(graphs) == 1  # one graph: forward, backward and the update, no break
    fit(second, x, y, epochs=2, batch_size=16, learning_rate=0.05, compile=True, **QUIET)
    assert len(graphs) == 1
    fit(small_model(), x.double(), y, epochs=1, batch_size=16, compile=True, **QUIET)
    assert len(graphs) == 2  # another dtype: compiled again


def test_the_one_graph_step_keeps_the_eager_book_steps_numbers(graphs: list[int]) -> None:
    """float32, 3 epochs of 4 steps, against fit's eager book step: float32 rounding only."""
    x, y = synthetic(64, dtype=torch.float32)
    compiled, eager = small_model(dtype=torch.float32), small_model(dtype=torch.float32)
    hc = fit(compiled, x, y, epochs=3, batch_size=16, learning_rate=0.05, compile=True, **QUIET)
    he = fit(eager, x, y, epochs=3, batch_size=16, learning_rate=0.05, **QUIET)
    assert len(graphs) == 1
    np.testing.assert_allclose(hc.batch_losses, he.batch_losses, rtol=1e-5)
    for c, e in zip(weights_np(compiled), weights_np(eager), strict=True):
        np.testing.assert_allclose(c, e, rtol=1e-5, atol=1e-6)
    assert not np.array_equal(weights_np(compiled)[0], weights_np(small_model())[0])


def test_hooks_added_or_removed_between_compiled_fits_run_as_registered(
    graphs: list[int],
) -> None:
    """With an optimizer (the chapter's step compiled, not the one-graph step), so each fit
    reuses the same compiled code unless a change of hooks is detected."""
    x, y = synthetic(64)

    def three_fits(model: torch.nn.Module, compile: bool) -> list[torch.Tensor]:
        sgd = torch.optim.SGD(model.parameters(), lr=0.05)
        kw = {"epochs": 1, "batch_size": 16, "optimizer": sgd, "compile": compile, **QUIET}
        fit(model, x, y, **kw)
        seen: list[torch.Tensor] = []
        handle = model.layers[0].register_forward_hook(lambda _m, _i, o: seen.append(o.detach()))
        fit(model, x, y, **kw)
        assert len(seen) == 1 + 4  # one look at the model's width (to check labels), 4 batches
        handle.remove()
        fit(model, x, y, **kw)
        assert len(seen) == 5  # removed: not called by code compiled while it was there
        return seen

    seen = three_fits(small_model(), compile=True)
    assert graphs  # compiled
    for got, want in zip(seen, three_fits(small_model(), compile=False), strict=True):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-10)  # the same values


def _scaled_output(_m: torch.nn.Module, _i: object, o: torch.Tensor) -> torch.Tensor:
    return o * 1.5  # a hook that changes the numbers: a compiled fit that skips it shows


def _scaled_input(_m: torch.nn.Module, i: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor]:
    return (i[0] * 0.5,)


HOOKS = {
    "forward hook": lambda model: model.layers[0].register_forward_hook(_scaled_output),
    "forward pre-hook": lambda model: model.layers[1].register_forward_pre_hook(_scaled_input),
    "global forward hook": lambda model: torch.nn.modules.module.register_module_forward_hook(
        lambda m, _i, o: o * 1.5 if m is model.layers[0] else None
    ),
}


@pytest.mark.parametrize("kind", list(HOOKS))
def test_a_hook_added_between_compiled_fits_runs_and_a_removed_one_no_longer_does(
    graphs: list[int], kind: str
) -> None:
    """The book's update (the one-graph step while the model has no hooks): fit, add a hook
    through torch's public register function, fit, remove it, fit. Each fit's losses and
    weights are an eager fit's with the same hook (a plain PyTorch loop's behaviour), and
    the hook runs as often: once for fit's look at the model, once per batch."""
    x, y = synthetic(64)
    kw = {"epochs": 1, "batch_size": 16, "learning_rate": 0.05, **QUIET}

    def three_fits(model: torch.nn.Module, compile: bool) -> tuple[list[object], list[int]]:
        runs: list[int] = []
        counting = torch.nn.modules.module.register_module_forward_pre_hook(
            lambda m, _i: runs.append(1) if m is model else None  # a call of the model
        )
        try:
            first = fit(model, x, y, compile=compile, **kw).batch_losses
            handle = HOOKS[kind](model)
            before = len(runs)
            second = fit(model, x, y, compile=compile, **kw).batch_losses
            hooked = len(runs) - before
            handle.remove()
            third = fit(model, x, y, compile=compile, **kw).batch_losses
        finally:
            counting.remove()
        return [first, second, third, *weights_np(model)], [hooked]

    compiled, compiled_calls = three_fits(small_model(), compile=True)
    assert graphs  # it compiled
    eager, eager_calls = three_fits(small_model(), compile=False)
    assert compiled_calls == eager_calls == [1 + 4]
    for c, e in zip(compiled, eager, strict=True):
        np.testing.assert_allclose(c, e, rtol=1e-10, atol=1e-13)  # type: ignore[arg-type]
    plain = small_model()  # without the hook the second fit's numbers differ
    fit(plain, x, y, compile=False, **kw)
    unhooked = fit(plain, x, y, compile=False, **kw).batch_losses
    assert not np.allclose(unhooked, compiled[1])  # type: ignore[arg-type]


def test_a_modules_backward_hook_runs_the_chapters_step_with_a_warning(graphs: list[int]) -> None:
    """Backward hooks are not probed (registering one would change which kind the module
    accepts); torch.func refuses them, so the fit warns and runs the chapter's step, whose
    numbers and hook calls are an eager fit's."""
    x, y = synthetic(64)
    kw = {"epochs": 1, "batch_size": 16, "learning_rate": 0.05, **QUIET}

    def hooked_fit(compile: bool) -> tuple[list[list[float]], int]:
        model, calls = small_model(), []
        model.layers[0].register_full_backward_hook(lambda *_: calls.append(1))
        return fit(model, x, y, compile=compile, **kw).batch_losses, len(calls)

    with pytest.warns(RuntimeWarning, match="running it eagerly"):
        compiled = hooked_fit(compile=True)
    assert compiled == hooked_fit(compile=False)
    assert compiled[1] == 4


def test_the_hook_look_uses_public_api_and_leaves_no_hook_behind() -> None:
    model = small_model()
    assert not compile_module.look_at_hooks(model).found
    handle = model.layers[1].W.register_hook(torch.zeros_like)
    assert compile_module.look_at_hooks(model).found  # a tensor hook on a trainable weight
    handle.remove()
    look = compile_module.look_at_hooks(model)
    assert not look.found
    assert compile_module.look_at_hooks(model).registered == look.registered  # its own no-ops
    handle = torch.nn.modules.module.register_module_full_backward_pre_hook(lambda *_: None)
    try:
        assert compile_module.look_at_hooks(model).found
    finally:
        handle.remove()


def test_the_port_reads_no_private_torch_api() -> None:
    """Speed from public PyTorch only: no ``torch._...`` name and no hook dictionary
    (``._forward_hooks``, ``_global_forward_hooks``...) anywhere in dl_ch2/."""
    import re

    private = re.compile(r"torch\._|\b_(global_)?(forward|backward)\w*hooks\b|_C\.")
    found = [
        f"{path.name}:{n}: {line.strip()}"
        for path in sorted((ROOT / "dl_ch2").glob("*.py"))
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if private.search(line)
    ]
    assert found == []


@pytest.mark.slow
def test_compiled_fit_agrees_with_the_book_path_and_the_reference_over_20_steps() -> None:
    x, y = synthetic(640)  # 20 batches of 32, float64
    compiled, book = small_model(), small_model()
    twin = reference_twin(book)
    hc = fit(compiled, x, y, epochs=1, batch_size=32, learning_rate=0.05, compile=True, **QUIET)
    hb = fit(book, x, y, epochs=1, batch_size=32, learning_rate=0.05, **QUIET)
    expected = ref.fit(twin, x.numpy(), y.numpy(), 1, 32, learning_rate=0.05, print_fn=None)
    assert len(hc.batch_losses[0]) == 20
    np.testing.assert_allclose(hc.batch_losses, hb.batch_losses, rtol=1e-10, atol=0)
    np.testing.assert_allclose(hc.batch_losses, expected, rtol=1e-10, atol=0)
    for c, b, r in zip(weights_np(compiled), weights_np(book), twin.weights, strict=True):
        np.testing.assert_allclose(c, b, rtol=1e-10, atol=1e-13)
        np.testing.assert_allclose(c, r, rtol=1e-10, atol=1e-13)


@pytest.mark.slow
def test_hooks_added_after_an_earlier_compiled_fit_are_honoured() -> None:
    """Compiled code does not re-check module hooks: a compiled fit resets torch.compile."""
    x, y = synthetic(64)
    model = small_model()
    fit(model, x, y, epochs=1, batch_size=16, learning_rate=0.05, compile=True, **QUIET)
    calls: list[int] = []
    model.layers[0].register_forward_hook(lambda *_: calls.append(1))
    w2 = model.layers[1].W
    w2.register_hook(torch.zeros_like)
    w1_before, w2_before = model.layers[0].W.detach().clone(), w2.detach().clone()
    fit(model, x, y, epochs=1, batch_size=16, learning_rate=0.05, compile=True, **QUIET)
    assert len(calls) == 1 + 4  # one look at the model's width (to check labels), 4 batches
    assert torch.equal(w2.detach(), w2_before)
    assert not torch.equal(model.layers[0].W.detach(), w1_before)


def test_a_model_with_every_weight_frozen_is_refused_before_compiling() -> None:
    model = small_model()
    model.requires_grad_(False)
    x, y = synthetic(32)
    with pytest.raises(ValueError, match=r"no weights to train.*requires_grad=False"):
        fit(model, x, y, epochs=1, compile=True, **QUIET)


def test_out_of_range_labels_are_refused_before_compiling() -> None:
    x, y = synthetic(32)
    y[7] = 3
    with pytest.raises(ValueError, match=r"\[0, 3\).*from 0 to 3"):
        fit(small_model(), x, y, epochs=1, compile=True, **QUIET)


FALLBACK_SCRIPT = textwrap.dedent(
    """
    import json, sys, warnings
    sys.path.insert(0, "tests")
    import numpy as np
    import conformance.reference as ref
    from test_training_loop import reference_twin, small_model, synthetic, weights_np
    from dl_ch2 import fit

    x, y = synthetic(64)
    model = small_model()
    twin = reference_twin(model)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        h = fit(model, x, y, epochs=2, batch_size=16, learning_rate=0.05, compile=True,
                print_fn=None, progress=False)
    expected = ref.fit(twin, x.numpy(), y.numpy(), 2, 16, learning_rate=0.05, print_fn=None)
    ok = np.allclose(h.batch_losses, expected, rtol=1e-10) and all(
        np.allclose(a, b, rtol=1e-10, atol=1e-13) for a, b in zip(weights_np(model), twin.weights)
    )
    ours = [str(w.message) for w in caught if "torch.compile failed" in str(w.message)]
    print(json.dumps({"ok": bool(ok), "warnings": ours}))
    """
)


@pytest.mark.slow
@pytest.mark.parametrize("variables", [("CXX",), ("CXX", "CC")])
def test_a_compile_failure_warns_once_and_runs_eagerly(variables: tuple[str, ...]) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), **dict.fromkeys(variables, "/nonexistent")}
    done = subprocess.run(
        [sys.executable, "-c", FALLBACK_SCRIPT],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["ok"]  # the eager retry trained from the untouched weights, as the reference
    assert len(result["warnings"]) == 1
    (message,) = result["warnings"]
    assert "\n" not in message and "running it eagerly" in message and "C++" in message


@pytest.mark.slow
def test_compiled_first_example_agrees_with_the_reference() -> None:
    images, labels = _toy(256)  # 4 batches of 64, float64
    model = build_first_example_model(
        dtype=torch.float64, generator=torch.Generator().manual_seed(0)
    )
    twin = first_example_twin(model)
    losses = train_first_example(
        model,
        images,
        labels,
        epochs=2,
        batch_size=64,
        generator=torch.Generator().manual_seed(7),
        compile=True,
        keras_accuracy=(accuracy := []),
    )
    expected_accuracy: list[float] = []
    expected = ref.train_first_example(
        twin,
        images.numpy(),
        labels.numpy(),
        epochs=2,
        batch_size=64,
        rng=TorchPermutations(7),  # type: ignore[arg-type]
        keras_accuracy=expected_accuracy,
    )
    np.testing.assert_allclose(losses, expected, rtol=1e-10)
    assert accuracy == expected_accuracy and len(accuracy) == 2  # counted inside the compiled step
    for p, w in zip(model.parameters(), twin.weights, strict=True):
        np.testing.assert_allclose(p.detach().numpy(), w, rtol=1e-9, atol=1e-12)


@pytest.mark.slow
@pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA GPU (CUDA graphs, mode='reduce-overhead')"
)
def test_on_cuda_the_compiled_fit_uses_cuda_graphs_and_sees_a_hook_added_between_fits() -> None:
    x, y = synthetic(64, device="cuda", dtype=torch.float32)
    kw = {"epochs": 1, "batch_size": 16, "learning_rate": 0.05, **QUIET}

    def two_fits(compile: bool) -> list[list[float]]:
        model = small_model(device="cuda", dtype=torch.float32)
        first = fit(model, x, y, compile=compile, **kw).batch_losses
        model.layers[0].register_forward_hook(_scaled_output)
        return first + fit(model, x, y, compile=compile, **kw).batch_losses

    compiled = two_fits(compile=True)
    assert any(key[3] == "reduce-overhead" for key in compile_module._KEPT)
    np.testing.assert_allclose(compiled, two_fits(compile=False), rtol=1e-5)
