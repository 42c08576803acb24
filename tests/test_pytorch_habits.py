"""Issue 28: the port in a PyTorch project. Each habit against a plain PyTorch loop.

An ordinary model either trains through ``fit`` as the plain loop (``model.train()``,
forward, ``loss.backward()``, ``optimizer.step()``; ``model.eval()`` under
``torch.inference_mode()`` to evaluate) trains it from the same weights and seed, or is
refused before any weight moves, with a message naming the fix. Expected values come from
that plain loop, from ``torch.autograd`` on plain torch ops or from ``nn.Linear``, never
from the port itself. Small synthetic data: every test runs in well under a second.
"""

from __future__ import annotations

import copy
import io
import math
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap
from torch.utils.data import DataLoader, TensorDataset

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from dl_ch2 import (
    History,
    NaiveDense,
    NaiveSequential,
    evaluate,
    fit,
    one_training_step,
    relu,
    softmax,
    sparse_categorical_crossentropy,
)

ROOT = Path(__file__).resolve().parents[1]
QUIET = {"print_fn": None, "progress": False}
FEATURES, CLASSES = 20, 4
Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def data(n: int = 256, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Four overlapping Gaussian clusters: learnable, not trivially (accuracy ~0.9)."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, CLASSES, (n,), generator=g)
    centers = torch.randn(CLASSES, FEATURES, generator=g)
    return centers[labels] + torch.randn(n, FEATURES, generator=g), labels


def mlp(*middle: nn.Module, seed: int = 0, out: Iterable[nn.Module] = ()) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(FEATURES, 16), *middle, nn.ReLU(), nn.Linear(16, CLASSES), *out)


def book_loss_plain(p: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The book's loss on probabilities in plain torch ops: clip, log, cross-entropy."""
    return F.cross_entropy(torch.log(p.clamp(1e-7, 1 - 1e-7)), y)


def adam(model: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.Adam(model.parameters(), lr=0.02)


def plain_loop(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    epochs: int,
    optimizer: torch.optim.Optimizer,
    loss: Loss = F.cross_entropy,
    after_step: Callable[[], object] = lambda: None,
    autocast: bool = False,
) -> list[float]:
    """The ordinary PyTorch loop; its batch losses."""
    losses = []
    model.train()
    for _ in range(epochs):
        for x, y in batches:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                value = loss(model(x), y)
            optimizer.zero_grad()
            value.backward()
            optimizer.step()
            after_step()
            losses.append(float(value.detach()))
    return losses


def in_batches(x: torch.Tensor, y: torch.Tensor, size: int) -> list[tuple[torch.Tensor, ...]]:
    return [(x[k : k + size], y[k : k + size]) for k in range(0, len(x), size)]


def plain_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    with torch.inference_mode():
        return float((model(x).argmax(1) == y).double().mean())


def assert_same_weights(a: nn.Module, b: nn.Module, rtol: float = 1e-5) -> None:
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        if p.is_floating_point():
            torch.testing.assert_close(p, q, rtol=rtol, atol=1e-6, msg=name)


def snapshot(model: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


# --- 1. the loss is the model's contract ----------------------------------------------------


def test_a_logits_model_is_refused_under_the_default_loss(
    capsys: pytest.CaptureFixture[str],
) -> None:
    x, y = data()
    model = mlp()  # logits: no softmax
    before = snapshot(model)
    with pytest.raises(ValueError, match=r"not probabilities.*loss_fn.*from_logits"):
        fit(model, x, y, epochs=1, optimizer=adam(model))
    assert capsys.readouterr().out == ""  # not even "Epoch 0"
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before, strict=True))
    sigmoid = mlp(out=[nn.Sigmoid()])  # in [0, 1], but rows do not sum to 1
    with pytest.raises(ValueError, match=r"sum to 1.*loss_fn"):
        fit(sigmoid, x, y, epochs=1, **QUIET)


@pytest.mark.parametrize("loss_fn", ["from_logits", F.cross_entropy, nn.CrossEntropyLoss()])
def test_a_logits_model_trains_with_loss_fn_as_the_plain_loop(loss_fn: object) -> None:
    x, y = data()
    model = mlp()
    twin = copy.deepcopy(model)
    h = fit(
        model,
        x,
        y,
        epochs=2,
        batch_size=32,
        loss_fn=loss_fn,  # type: ignore[arg-type]
        optimizer=adam(model),
        **QUIET,
    )
    expected = plain_loop(twin, in_batches(x, y, 32), 2, adam(twin))
    assert [v for e in h.batch_losses for v in e] == pytest.approx(expected, rel=1e-5)
    assert_same_weights(model, twin)
    assert evaluate(model, x, y) == plain_accuracy(twin, x, y) > 0.8


def test_a_custom_loss_fn_in_one_training_step_is_the_plain_step() -> None:
    x, y = data(64)
    model = mlp(out=[nn.Softmax(dim=1)])
    twin = copy.deepcopy(model)
    smoothing = nn.CrossEntropyLoss(label_smoothing=0.1)

    def smoothed(p: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return smoothing(torch.log(p), labels)

    loss = one_training_step(model, x, y, 0.5, loss_fn=smoothed)
    expected = plain_loop(twin, [(x, y)], 1, torch.optim.SGD(twin.parameters(), lr=0.5), smoothed)
    assert float(loss) == pytest.approx(expected[0], rel=1e-6)
    assert_same_weights(model, twin)


def test_a_softmax_model_trains_under_the_default_loss_as_the_plain_loop() -> None:
    x, y = data()
    model = mlp(out=[nn.Softmax(dim=1)])
    twin = copy.deepcopy(model)
    fit(model, x, y, epochs=2, batch_size=32, learning_rate=0.1, **QUIET)
    plain_loop(
        twin, in_batches(x, y, 32), 2, torch.optim.SGD(twin.parameters(), lr=0.1), book_loss_plain
    )
    assert_same_weights(model, twin)


# --- 2. modes as PyTorch does them ------------------------------------------------------------


def test_a_batchnorm_model_trains_and_evaluates_as_the_plain_loop() -> None:
    x, y = data()
    model = mlp(nn.BatchNorm1d(16))
    twin = copy.deepcopy(model)
    model.eval()  # the caller's mode: fit trains in train mode, then restores it
    fit(model, x, y, epochs=3, batch_size=32, loss_fn="from_logits", optimizer=adam(model), **QUIET)
    assert not model.training and not model[1].training
    plain_loop(twin, in_batches(x, y, 32), 3, adam(twin))
    assert_same_weights(model, twin)  # the running statistics included
    assert evaluate(model, x, y) == plain_accuracy(twin, x, y) > 0.8


def test_dropout_trains_on_the_same_masks_and_evaluates_in_eval_mode() -> None:
    x, y = data()
    model = mlp(nn.Dropout(0.5))
    twin = copy.deepcopy(model)
    torch.manual_seed(7)  # the masks come from the global generator, as in any loop
    fit(model, x, y, epochs=3, batch_size=32, loss_fn="from_logits", optimizer=adam(model), **QUIET)
    assert model.training  # it was in train mode (a new module's default): restored
    torch.manual_seed(7)
    plain_loop(twin, in_batches(x, y, 32), 3, adam(twin))
    assert_same_weights(model, twin)
    accuracy = evaluate(model, x, y)
    assert model.training  # evaluate restores the mode too
    assert accuracy == plain_accuracy(twin, x, y) > 0.8


def test_fit_restores_mixed_modes_and_checks_in_eval_and_inference_mode() -> None:
    seen: list[tuple[bool, bool]] = []

    class Spy(nn.Module):
        def forward(self, z: torch.Tensor) -> torch.Tensor:
            seen.append((self.training, torch.is_inference_mode_enabled()))
            return z

    x, y = data(64)
    model = mlp(Spy(), nn.BatchNorm1d(16), out=[nn.Softmax(dim=1)])
    model[2].eval()  # a frozen-statistics BatchNorm inside a training model
    fit(model, x, y, epochs=1, batch_size=32, **QUIET)
    assert seen == [(False, True), (True, False), (True, False)]  # check pass, 2 batches
    assert model.training and model[1].training and not model[2].training
    evaluate(model, x, y)
    assert seen[-1] == (False, True)
    assert model.training and not model[2].training


# --- 3. parameters as PyTorch names them ----------------------------------------------------


def test_frozen_layers_stay_frozen_and_the_rest_trains_as_the_plain_loop() -> None:
    x, y = data()
    model = mlp(out=[nn.Softmax(dim=1)])
    model[0].requires_grad_(False)
    twin = copy.deepcopy(model)
    frozen = [p.detach().clone() for p in model[0].parameters()]
    fit(model, x, y, epochs=2, batch_size=32, learning_rate=0.1, **QUIET)
    assert all(torch.equal(p, q) for p, q in zip(model[0].parameters(), frozen, strict=True))
    plain_loop(
        twin, in_batches(x, y, 32), 2, torch.optim.SGD(twin.parameters(), lr=0.1), book_loss_plain
    )
    assert_same_weights(model, twin)
    assert not torch.equal(model[2].weight, mlp(out=[nn.Softmax(dim=1)])[2].weight)
    model.requires_grad_(False)
    with pytest.raises(ValueError, match=r"requires_grad=False"):
        fit(model, x, y, epochs=1, **QUIET)


def test_a_layer_frozen_between_two_fits_with_one_optimizer_stays_frozen() -> None:
    # the first fit leaves .grad filled; the optimizer must not step the frozen layer with it
    x, y = data()
    model = mlp(out=[nn.Softmax(dim=1)])
    twin = copy.deepcopy(model)
    opt, twin_opt = adam(model), adam(twin)
    fit(model, x, y, epochs=1, batch_size=32, optimizer=opt, **QUIET)
    plain_loop(twin, in_batches(x, y, 32), 1, twin_opt, book_loss_plain)
    model[0].requires_grad_(False)
    twin[0].requires_grad_(False)
    frozen = snapshot(model[0])
    fit(model, x, y, epochs=1, batch_size=32, optimizer=opt, **QUIET)
    plain_loop(twin, in_batches(x, y, 32), 1, twin_opt, book_loss_plain)
    assert all(torch.equal(p, q) for p, q in zip(model[0].parameters(), frozen, strict=True))
    assert_same_weights(model, twin)


def test_an_attribute_named_weights_that_is_not_the_books_list_is_left_alone() -> None:
    class Weighted(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = mlp(out=[nn.Softmax(dim=1)])
            self.weights = torch.ones(CLASSES)  # say, class weights: not a list of parameters

        def forward(self, z: torch.Tensor) -> torch.Tensor:
            out: torch.Tensor = self.net(z)
            return out

    x, y = data()
    model = Weighted()
    twin = copy.deepcopy(model)
    fit(model, x, y, epochs=1, batch_size=32, learning_rate=0.1, **QUIET)
    plain_loop(
        twin, in_batches(x, y, 32), 1, torch.optim.SGD(twin.parameters(), lr=0.1), book_loss_plain
    )
    assert_same_weights(model, twin)
    assert torch.equal(model.weights, torch.ones(CLASSES))


@pytest.mark.parametrize("with_optimizer", [False, True])
def test_grad_holds_the_last_batch_gradients_after_a_step(with_optimizer: bool) -> None:
    x, y = data(64)
    model = NaiveSequential(
        [
            NaiveDense(FEATURES, 8, relu, generator=torch.Generator().manual_seed(0)),
            NaiveDense(8, CLASSES, softmax, generator=torch.Generator().manual_seed(1)),
        ]
    )
    twin = copy.deepcopy(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1) if with_optimizer else None
    one_training_step(model, x, y, None if opt else 0.1, optimizer=opt)
    plain_loop(twin, [(x, y)], 1, torch.optim.SGD(twin.parameters(), lr=0.1), book_loss_plain)
    for p, q in zip(model.parameters(), twin.parameters(), strict=True):
        assert p.grad is not None and q.grad is not None
        torch.testing.assert_close(p.grad, q.grad)


# --- 4. mixed precision ------------------------------------------------------------------------


def test_fit_under_autocast_updates_every_weight_as_the_plain_loop() -> None:
    x, y = data()
    model = mlp(out=[nn.Softmax(dim=1)])
    twin = copy.deepcopy(model)
    before = snapshot(model)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        h = fit(model, x, y, epochs=3, batch_size=32, learning_rate=0.2, **QUIET)
    expected = plain_loop(
        twin,
        in_batches(x, y, 32),
        3,
        torch.optim.SGD(twin.parameters(), 0.2),
        book_loss_plain,
        autocast=True,
    )
    assert all(not torch.equal(p, q) for p, q in zip(model.parameters(), before, strict=True))
    assert h.epoch_losses[-1] < 0.7 * h.epoch_losses[0]  # it learns (the bug left it flat)
    assert [v for e in h.batch_losses for v in e] == pytest.approx(expected, rel=2e-2)
    assert abs(evaluate(model, x, y) - plain_accuracy(twin, x, y)) <= 0.02


# --- 5. data and callbacks ---------------------------------------------------------------------


def test_a_dataloader_and_a_list_of_batches_train_as_the_plain_loop() -> None:
    x, y = data()
    loader = DataLoader(TensorDataset(x, y), batch_size=32)
    for source in (loader, in_batches(x, y, 32)):
        model = mlp(out=[nn.Softmax(dim=1)])
        twin = copy.deepcopy(model)
        h = fit(model, source, epochs=2, learning_rate=0.1, **QUIET)
        expected = plain_loop(
            twin, source, 2, torch.optim.SGD(twin.parameters(), lr=0.1), book_loss_plain
        )
        assert [len(e) for e in h.batch_losses] == [8, 8]
        assert [v for e in h.batch_losses for v in e] == pytest.approx(expected, rel=1e-5)
        assert_same_weights(model, twin)


def test_iterable_input_is_checked_before_any_weight_moves() -> None:
    x, y = data(64)
    model = mlp(out=[nn.Softmax(dim=1)])
    before = snapshot(model)
    one_shot = iter(in_batches(x, y, 32))
    with pytest.raises(ValueError, match=r"iterator.*one epoch"):
        fit(model, one_shot, epochs=2, **QUIET)
    with pytest.raises(ValueError, match=r"batch_size.*iterable"):
        fit(model, in_batches(x, y, 32), epochs=1, batch_size=16, **QUIET)
    with pytest.raises(ValueError, match=r"labels.*iterable"):
        fit(model, in_batches(x, y, 32), y, epochs=1, **QUIET)
    with pytest.raises(TypeError, match=r"\(images, labels\)"):
        fit(model, [x[:32]], epochs=1, **QUIET)
    with pytest.raises(TypeError, match=r"images have dtype torch.float64"):
        fit(model, [(x.double(), y)], epochs=1, **QUIET)
    with pytest.raises(ValueError, match="no batch"):
        fit(model, [], epochs=1, **QUIET)
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        fit(model, [(x[:8], y[:8] + 4)], epochs=1, **QUIET)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before, strict=True))
    fit(model, iter(in_batches(x, y, 32)), epochs=1, **QUIET)  # one epoch: an iterator is fine


def test_a_per_batch_scheduler_runs_as_in_the_plain_loop() -> None:
    x, y = data()

    def one_cycle(opt: torch.optim.Optimizer) -> torch.optim.lr_scheduler.OneCycleLR:
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.5, total_steps=16)

    model = mlp(out=[nn.Softmax(dim=1)])
    twin = copy.deepcopy(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched, rates = one_cycle(opt), []

    def on_batch_end(epoch: int, batch: int, loss: torch.Tensor) -> None:
        rates.append(opt.param_groups[0]["lr"])
        sched.step()

    fit(model, x, y, epochs=2, batch_size=32, optimizer=opt, on_batch_end=on_batch_end, **QUIET)
    twin_opt = torch.optim.SGD(twin.parameters(), lr=0.1)
    twin_sched, twin_rates = one_cycle(twin_opt), []

    def after() -> None:
        twin_rates.append(twin_opt.param_groups[0]["lr"])
        twin_sched.step()

    plain_loop(twin, in_batches(x, y, 32), 2, twin_opt, book_loss_plain, after)
    assert rates == twin_rates and len(set(rates)) >= 8  # it did schedule
    assert_same_weights(model, twin)


def test_learning_rate_and_optimizer_together_are_refused() -> None:
    x, y = data(64)
    model = mlp(out=[nn.Softmax(dim=1)])
    before = snapshot(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match=r"learning_rate or optimizer, not both"):
        fit(model, x, y, epochs=1, learning_rate=0.5, optimizer=opt, **QUIET)
    with pytest.raises(ValueError, match=r"learning_rate=0.5.*optimizer's lr 0.1"):
        one_training_step(model, x, y, 0.5, optimizer=opt)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before, strict=True))


# --- 6. torch.func, devices and dtypes ---------------------------------------------------------


def probabilities(n: int = 6, seed: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    p = torch.softmax(torch.randn(n, CLASSES, generator=g, dtype=torch.float64), dim=1)
    return p, torch.randint(0, CLASSES, (n,), generator=g)


@pytest.mark.parametrize("from_logits", [False, True])
def test_the_loss_under_torch_func_grad_and_vmap(from_logits: bool) -> None:
    p, y = probabilities()
    plain = F.cross_entropy if from_logits else book_loss_plain

    def ours(q: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return sparse_categorical_crossentropy(t, q, from_logits=from_logits).mean()

    q = p.clone().requires_grad_(True)
    (expected,) = torch.autograd.grad(plain(q, y), q)
    torch.testing.assert_close(grad(ours)(p, y), expected)
    per_sample = vmap(grad(lambda q1, t1: ours(q1[None], t1[None])))(p, y)
    for i in range(len(y)):
        qi = p[i : i + 1].clone().requires_grad_(True)
        (gi,) = torch.autograd.grad(plain(qi, y[i : i + 1]), qi)
        torch.testing.assert_close(per_sample[i], gi[0])


def test_per_sample_gradients_of_a_model_with_functional_call() -> None:
    model = mlp(out=[nn.Softmax(dim=1)])
    params = {k: v.detach() for k, v in model.named_parameters()}
    x, y = data(5)

    def loss(ps: dict[str, torch.Tensor], xi: torch.Tensor, yi: torch.Tensor) -> torch.Tensor:
        out = functional_call(model, ps, (xi[None],))
        return sparse_categorical_crossentropy(yi[None], out).mean()

    grads = vmap(grad(loss), in_dims=(None, 0, 0))(params, x, y)
    for i in range(len(x)):
        model.zero_grad()
        book_loss_plain(model(x[i : i + 1]), y[i : i + 1]).backward()
        for name, p in model.named_parameters():
            torch.testing.assert_close(grads[name][i], p.grad)


def test_naive_dense_honours_device_contexts_and_the_default_dtype_as_nn_linear() -> None:
    with torch.device("meta"):
        layer, linear = NaiveDense(3, 2, relu), nn.Linear(3, 2)
    assert layer.W.device == linear.weight.device == torch.device("meta")
    assert NaiveDense(3, 2, relu, device="meta").b.is_meta
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        layer, linear = NaiveDense(3, 2, relu), nn.Linear(3, 2)
    finally:
        torch.set_default_dtype(previous)
    assert layer.W.dtype == linear.weight.dtype == torch.float64
    assert NaiveDense(3, 2, relu, dtype=torch.float64).W.dtype == torch.float64
    # built on meta, materialised the PyTorch way, drawn as the book draws it
    with torch.device("meta"):
        lazy = NaiveDense(30, 7, relu)
    lazy.to_empty(device="cpu")
    lazy.reset_parameters(generator=torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(5)
    expected = torch.rand(30, 7, generator=g) * 0.1  # U[0, 0.1), the book's draw
    torch.testing.assert_close(lazy.W.detach(), expected)
    assert torch.equal(lazy.b.detach(), torch.zeros(7))


# --- 7. interop with nn.Linear -----------------------------------------------------------------


def test_naive_dense_and_nn_linear_convert_both_ways_with_the_same_outputs() -> None:
    torch.manual_seed(0)
    linear = nn.Linear(5, 5)  # square: a transposed layout would load silently
    x = torch.randn(4, 5)
    dense = NaiveDense.from_linear(linear, relu)
    torch.testing.assert_close(dense(x), torch.relu(linear(x)))
    back = dense.to_linear()
    assert isinstance(back, nn.Linear)
    torch.testing.assert_close(back(x), linear(x))
    # state dicts: NaiveDense's W is (in, out), nn.Linear's weight (out, in)
    fresh = nn.Linear(5, 5)
    fresh.load_state_dict(NaiveDense.linear_state_dict(dense.state_dict()))
    torch.testing.assert_close(fresh(x), linear(x))
    renamed = {"weight": dense.W.detach(), "bias": dense.b.detach()}  # the trap: no error...
    fresh.load_state_dict(renamed)
    assert not torch.allclose(fresh(x), linear(x))  # ...and wrong outputs
    other = NaiveDense(5, 5, relu)
    other.load_state_dict(NaiveDense.dense_state_dict(linear.state_dict()))
    torch.testing.assert_close(other(x), torch.relu(linear(x)))
    with pytest.raises(ValueError, match=r"'W'.*'b'"):
        NaiveDense.linear_state_dict(linear.state_dict())


# --- 8. packaging and output -------------------------------------------------------------------


def test_every_package_ships_py_typed() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    packages = config["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"]
    assert set(packages) >= {"dl_ch2", "dl_ch2_tools", "conformance"}
    for package in packages:
        assert (ROOT / package / "py.typed").is_file(), package


def test_history_has_a_short_repr() -> None:
    h = History([[2.0 + k / 1000 for k in range(469)]] * 10)
    text = repr(h)
    assert len(text) < 200 and "epochs=10" in text and "469" in text


def test_log_lines_do_not_break_the_progress_bar(monkeypatch: pytest.MonkeyPatch) -> None:
    terminal = io.StringIO()  # stdout and stderr on one terminal, as in a shell
    monkeypatch.setattr(sys, "stdout", terminal)
    monkeypatch.setattr(sys, "stderr", terminal)
    x, y = data(64)
    fit(mlp(out=[nn.Softmax(dim=1)]), x, y, epochs=2, batch_size=8, log_every=3, progress=True)
    screen = [line.split("\r")[-1] for line in terminal.getvalue().split("\n")]
    logged = [line for line in screen if "loss at batch" in line]
    assert len(logged) == 6  # batches 0, 3, 6 of each epoch
    assert all(line.startswith("loss at batch") for line in logged), logged
    assert math.isfinite(float(logged[0].split(": ")[1]))
