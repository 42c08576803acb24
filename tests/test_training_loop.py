"""§2.5.2-2.5.4: one_training_step, update_weights, fit, evaluate.

Expected values come from the NumPy reference (conformance.reference, hand-derived
gradients) or are computed by hand, never from the port itself.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.testing import assert_close

import conformance.reference as ref
from dl_ch2 import (
    DivergenceError,
    NaiveDense,
    NaiveSequential,
    NonFiniteLossError,
    evaluate,
    fit,
    one_training_step,
    relu,
    softmax,
    update_weights,
)

QUIET = {"print_fn": None, "progress": False}


def small_model(
    device: torch.device | str = "cpu", dtype: torch.dtype = torch.float64, seed: int = 0
) -> NaiveSequential:
    g = torch.Generator().manual_seed(seed)
    return NaiveSequential(
        [
            NaiveDense(12, 8, relu, device=device, dtype=dtype, generator=g),
            NaiveDense(8, 3, softmax, device=device, dtype=dtype, generator=g),
        ]
    )


def synthetic(
    n: int, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float64, seed: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    """Three well-separated clusters, so a few steps of SGD visibly help."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 3, (n,), generator=g)
    centers = torch.eye(3, 12, dtype=dtype) * 3
    x = centers[labels] + 0.3 * torch.rand(n, 12, generator=g, dtype=dtype)
    return x.to(device), labels.to(device)


def reference_twin(model: torch.nn.Module) -> ref.NaiveSequential:
    """The NumPy reference model with the same weights (relu/softmax layers, float64)."""
    acts = {relu: ref.relu, softmax: ref.softmax}
    layers = []
    for layer in model.layers:  # type: ignore[union-attr]
        r = ref.NaiveDense(layer.W.shape[0], layer.W.shape[1], acts[layer.activation])
        r.W[...] = layer.W.detach().cpu().double().numpy()
        r.b[...] = layer.b.detach().cpu().double().numpy()
        layers.append(r)
    return ref.NaiveSequential(layers)


def weights_np(model: torch.nn.Module) -> list[np.ndarray]:
    return [w.detach().cpu().double().numpy().copy() for w in model.weights]  # type: ignore[union-attr]


def assert_weights_match(model: torch.nn.Module, twin: ref.NaiveSequential, **tol: float) -> None:
    for w, r in zip(weights_np(model), twin.weights, strict=True):
        np.testing.assert_allclose(w, r, **({"rtol": 1e-10, "atol": 1e-12} | tol))


# --- one_training_step and update_weights --------------------------------------------------


def test_one_training_step_matches_the_numpy_reference(device: torch.device) -> None:
    model = small_model(device)
    twin = reference_twin(model)
    x, y = synthetic(32, device)
    before = weights_np(model)
    expected_loss, grads = ref.loss_and_gradients(twin, x.cpu().numpy(), y.cpu().numpy())
    returned = one_training_step(model, x, y, learning_rate=0.05)
    assert returned.ndim == 0 and not returned.requires_grad
    assert float(returned) == pytest.approx(expected_loss, rel=1e-12)
    for w, w0, g in zip(weights_np(model), before, grads, strict=True):
        np.testing.assert_allclose(w, w0 - 0.05 * g, rtol=1e-10, atol=1e-13)
        assert not np.array_equal(w, w0)


def test_default_learning_rate_is_1e_minus_3() -> None:
    model = small_model()
    twin = reference_twin(model)
    x, y = synthetic(16)
    one_training_step(model, x, y)
    ref.one_training_step(twin, x.numpy(), y.numpy(), learning_rate=1e-3)
    assert_weights_match(model, twin)


def test_update_weights_touches_only_the_weights_given() -> None:
    # Erratum: the notebook's first update_weights iterated the global model's weights.
    model, other = small_model(seed=0), small_model(seed=1)
    grads = [torch.ones_like(w) for w in other.weights]
    model_before = [w.detach().clone() for w in model.weights]
    other_before = [w.detach().clone() for w in other.weights]
    update_weights(grads, other.weights, learning_rate=0.5)
    for w, w0 in zip(model.weights, model_before, strict=True):
        assert torch.equal(w, w0)
    for w, w0 in zip(other.weights, other_before, strict=True):
        assert_close(w.detach(), w0 - 0.5)
    # a subset: the rest stays put
    update_weights(grads[:1], other.weights[:1], learning_rate=1.0)
    assert_close(other.weights[0].detach(), other_before[0] - 1.5)
    assert torch.equal(other.weights[1].detach(), other_before[1] - 0.5)


def test_update_weights_rejects_mismatches() -> None:
    model = small_model()
    with pytest.raises(ValueError, match="3 gradients for 4 weights"):
        update_weights([torch.zeros(1)] * 3, model.weights)
    with pytest.raises(ValueError, match=r"gradients\[0\].*\(8, 12\).*\(12, 8\)"):
        update_weights([torch.zeros(8, 12)], model.weights[:1])


@pytest.mark.parametrize("as_positional", [False, True])
def test_torch_sgd_optimizer_gives_the_references_weights(
    device: torch.device, as_positional: bool
) -> None:
    model = small_model(device)
    twin = reference_twin(model)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    x, y = synthetic(64, device)
    for k in range(0, 64, 16):
        xb, yb = x[k : k + 16], y[k : k + 16]
        _, grads = ref.loss_and_gradients(twin, xb.cpu().numpy(), yb.cpu().numpy())
        if as_positional:  # the contract's one_training_step(model, x, y, optimizer)
            loss = one_training_step(model, xb, yb, opt)
        else:
            loss = one_training_step(model, xb, yb, optimizer=opt)
        expected = ref.one_training_step(twin, xb.cpu().numpy(), yb.cpu().numpy(), 1e-3)
        assert float(loss) == pytest.approx(expected, rel=1e-12)
        # .grad holds this batch's gradients, as after loss.backward(); optimizer.step()
        for w, g in zip(model.weights, grads, strict=True):
            np.testing.assert_allclose(w.grad.cpu().numpy(), g, rtol=1e-10, atol=1e-13)
    assert_weights_match(model, twin)


def test_gradient_transform_sits_between_grad_and_update() -> None:
    model = small_model()
    twin = reference_twin(model)
    x, y = synthetic(16)
    seen: list[int] = []

    def halve(grads: list[torch.Tensor]) -> list[torch.Tensor]:
        seen.append(len(grads))
        return [g / 2 for g in grads]

    one_training_step(model, x, y, 0.2, gradient_transform=halve)
    ref.one_training_step(twin, x.numpy(), y.numpy(), learning_rate=0.1)  # lr * g / 2
    assert seen == [4]
    assert_weights_match(model, twin)


# --- fit -----------------------------------------------------------------------------------


def test_fit_prints_notebook_lines_and_honours_batch_size(
    capsys: pytest.CaptureFixture[str],
) -> None:
    model = small_model()
    x, y = synthetic(1000)
    history = fit(model, x, y, epochs=2, batch_size=4, learning_rate=0.01, progress=False)
    out = capsys.readouterr().out.splitlines()
    # 1000 / 4 = 250 batches per epoch (the notebook's fit would have used 128: 8 batches)
    assert [len(e) for e in history.batch_losses] == [250, 250]
    expected_heads = [
        "Epoch 0",
        "loss at batch 0:",
        "loss at batch 100:",
        "loss at batch 200:",
        "Epoch 1",
        "loss at batch 0:",
        "loss at batch 100:",
        "loss at batch 200:",
    ]
    assert len(out) == len(expected_heads)
    for line, head in zip(out, expected_heads, strict=True):
        assert line.startswith(head)
    first = float(out[1].split(": ")[1])
    assert first == pytest.approx(round(history.batch_losses[0][0], 2))
    assert history.epoch_losses[1] < history.epoch_losses[0]


def test_fit_is_the_references_fit(device: torch.device) -> None:
    """fit = one_training_step per batch: batch losses and weights as the NumPy fit's."""
    x, y = synthetic(300, device)
    model = small_model(device)
    twin = reference_twin(model)
    history = fit(model, x, y, epochs=2, batch_size=32, learning_rate=0.05, **QUIET)
    expected = ref.fit(
        twin, x.cpu().numpy(), y.cpu().numpy(), 2, 32, learning_rate=0.05, print_fn=None
    )
    assert [len(e) for e in history.batch_losses] == [10, 10]
    for got, want in zip(history.batch_losses, expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-10)
    assert_weights_match(model, twin)


def test_fit_shuffle_is_seeded() -> None:
    x, y = synthetic(200)
    runs = []
    for _ in range(2):
        model = small_model()
        h = fit(
            model,
            x,
            y,
            epochs=1,
            batch_size=32,
            shuffle=True,
            generator=torch.Generator().manual_seed(3),
            **QUIET,
        )
        runs.append((h.batch_losses, [w.detach().clone() for w in model.weights]))
    assert runs[0][0] == runs[1][0]
    unshuffled = fit(small_model(), x, y, epochs=1, batch_size=32, **QUIET)
    assert unshuffled.batch_losses != runs[0][0]


def test_fit_stops_on_non_finite_loss_naming_epoch_and_batch() -> None:
    x, y = synthetic(100)
    x[3 * 8 + 2, 0] = float("nan")  # sample in batch 3 at batch_size 8
    with pytest.raises(NonFiniteLossError, match=r"epoch 0, batch 3") as info:
        fit(small_model(), x, y, epochs=2, batch_size=8, **QUIET)
    assert info.value.epoch == 0 and info.value.batch == 3


def test_fit_progress_bar_goes_to_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    x, y = synthetic(64)
    fit(small_model(), x, y, epochs=1, batch_size=8, print_fn=None, progress=True)
    captured = capsys.readouterr()
    assert "epoch 0" in captured.err and "/8" in captured.err and captured.out == ""


def test_fit_bad_input() -> None:
    x, y = synthetic(10)
    with pytest.raises(ValueError, match=r"labels must have shape \(N,\) = \(10,\)"):
        fit(small_model(), x, y[:9], epochs=1, print_fn=None)
    with pytest.raises(ValueError, match="epochs"):
        fit(small_model(), x, y, epochs=0, print_fn=None)
    with pytest.raises(ValueError, match="batch_size"):
        fit(small_model(), x, y, epochs=1, batch_size=0, print_fn=None)
    with pytest.raises(TypeError, match="labels must hold integer"):
        fit(small_model(), x, y.double(), epochs=1, print_fn=None)
    with pytest.raises(ValueError, match=r">= 0, got -1"):
        fit(small_model(), x, torch.full((10,), -1), epochs=1, print_fn=None)


def test_a_label_beyond_the_models_width_fails_before_any_weight_moves(
    capsys: pytest.CaptureFixture[str],
) -> None:
    x, y = synthetic(64)
    y[60] = 3  # in the last batch; the model has 3 outputs
    model = small_model()
    before = [w.detach().clone() for w in model.weights]
    with pytest.raises(ValueError, match=r"\[0, 3\) for a model with 3 outputs.*0 to 3"):
        fit(model, x, y, epochs=1, batch_size=16)
    assert capsys.readouterr().out == ""
    for w, w0 in zip(model.weights, before, strict=True):
        assert torch.equal(w, w0)


def test_training_improves_accuracy_on_separable_data() -> None:
    x, y = synthetic(600)
    model = small_model()
    before = evaluate(model, x, y)
    fit(model, x, y, epochs=5, batch_size=32, learning_rate=0.1, **QUIET)
    after = evaluate(model, x, y)
    assert after > 0.95 and after > before


# --- fit for any nn.Module: hooks, frozen weights, custom layers (issue 11) ---------------


def test_a_forward_hook_fires_on_every_batch() -> None:
    model = small_model()
    calls: list[int] = []
    model.layers[0].register_forward_hook(lambda *_: calls.append(1))
    x, y = synthetic(64)
    fit(model, x, y, epochs=2, batch_size=16, **QUIET)
    assert len(calls) == 1 + 2 * 4  # one look at the model's width, then every batch


def test_a_gradient_hook_that_zeroes_w2_is_honoured() -> None:
    model = small_model()
    w1, w2 = model.layers[0].W, model.layers[1].W
    w1_before, w2_before = w1.detach().clone(), w2.detach().clone()
    w2.register_hook(torch.zeros_like)
    x, y = synthetic(64)
    fit(model, x, y, epochs=1, batch_size=16, learning_rate=0.1, **QUIET)
    assert torch.equal(w2.detach(), w2_before)
    assert not torch.equal(w1.detach(), w1_before)


def test_a_frozen_weight_is_skipped_and_the_others_train_as_the_reference() -> None:
    # issue 28: frozen weights are skipped, as torch.optim skips them (they used to be refused)
    model = small_model()
    twin = reference_twin(model)
    model.layers[0].W.requires_grad_(False)
    x, y = synthetic(64)
    _, grads = ref.loss_and_gradients(twin, x.numpy(), y.numpy())
    before = weights_np(model)
    one_training_step(model, x, y, learning_rate=0.1)
    after = weights_np(model)
    np.testing.assert_array_equal(after[0], before[0])  # W1 frozen: untouched
    for w, w0, g in zip(after[1:], before[1:], grads[1:], strict=True):
        np.testing.assert_allclose(w, w0 - 0.1 * g, rtol=1e-10, atol=1e-13)
    model.requires_grad_(False)
    with pytest.raises(ValueError, match=r"no weights to train.*requires_grad=False"):
        fit(model, x, y, epochs=1, batch_size=16, **QUIET)


def test_custom_layers_and_activations_train_as_the_reference() -> None:
    """A layer class of one's own, and an activation function of one's own (relu, rewritten)."""

    class Affine(torch.nn.Module):
        def __init__(self, W: torch.Tensor, b: torch.Tensor) -> None:
            super().__init__()
            self.W, self.b = torch.nn.Parameter(W.clone()), torch.nn.Parameter(b.clone())
            self.activation = softmax

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return softmax(x @ self.W + self.b)

    def my_relu(z: torch.Tensor) -> torch.Tensor:
        return torch.where(z > 0, z, torch.zeros_like(z))

    book = small_model()
    first = NaiveDense(12, 8, my_relu, dtype=torch.float64)
    with torch.no_grad():
        first.W.copy_(book.layers[0].W)
    second = Affine(book.layers[1].W.detach(), book.layers[1].b.detach())
    custom = NaiveSequential([first, second])
    twin = reference_twin(book)
    x, y = synthetic(200)
    h = fit(custom, x, y, epochs=2, batch_size=20, learning_rate=0.1, **QUIET)
    expected = ref.fit(twin, x.numpy(), y.numpy(), 2, 20, learning_rate=0.1, print_fn=None)
    np.testing.assert_allclose(h.batch_losses, expected, rtol=1e-10)
    for w, r in zip(weights_np(custom), twin.weights, strict=True):
        np.testing.assert_allclose(w, r, rtol=1e-10, atol=1e-12)


def test_an_nn_sequential_without_weights_attribute_trains_its_parameters() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(12, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3), torch.nn.Softmax(dim=1)
    ).double()
    x, y = synthetic(300)
    fit(model, x, y, epochs=5, batch_size=20, learning_rate=0.5, **QUIET)
    assert evaluate(model, x, y) > 0.9


# --- bad input (issue 14) ------------------------------------------------------------------

BAD_RATES = [("0.1", TypeError), (True, TypeError), ([0.1], TypeError), (-1.0, ValueError)]
BAD_RATES += [(0, ValueError), (float("nan"), ValueError), (float("inf"), ValueError)]


@pytest.mark.parametrize(("rate", "error"), BAD_RATES)
def test_learning_rate_must_be_positive_and_finite(rate: object, error: type[Exception]) -> None:
    x, y = synthetic(32)
    model = small_model()
    before = [w.detach().clone() for w in model.weights]
    with pytest.raises(error, match="learning_rate"):
        fit(model, x, y, epochs=1, learning_rate=rate, **QUIET)  # type: ignore[arg-type]
    with pytest.raises(error, match="learning_rate"):
        one_training_step(model, x, y, rate)  # type: ignore[arg-type]
    for w, w0 in zip(model.weights, before, strict=True):
        assert torch.equal(w, w0)


def test_numpy_and_int_learning_rates_are_real_numbers() -> None:
    x, y = synthetic(32)
    for rate in (np.float64(0.01), np.float32(0.01), 1):
        assert torch.isfinite(one_training_step(small_model(), x, y, rate))  # type: ignore[arg-type]


def test_a_huge_learning_rate_is_stopped_as_divergence() -> None:
    # clipping bounds the loss at -log(1e-7) = 16.1, so it never becomes non-finite
    x, y = synthetic(640)
    with pytest.raises(DivergenceError, match=r"diverged at epoch 0, batch \d+") as info:
        fit(small_model(), x, y, epochs=3, batch_size=32, learning_rate=1e6, log_every=5, **QUIET)
    assert isinstance(info.value, NonFiniteLossError)  # caught where non-finite losses are
    assert info.value.epoch == 0 and info.value.batch in (5, 10)
    assert info.value.loss >= -math.log(1e-7) / 2


def test_divergence_is_not_raised_for_a_run_that_learns_from_a_high_start() -> None:
    # a saturated start (loss near the ceiling from batch 0) that goes down is not divergence
    x, y = synthetic(320)
    model = small_model()
    with torch.no_grad():  # confident and mostly wrong: the first loss is above 16.1 / 2
        model.layers[0].W.mul_(30)
        model.layers[1].W.mul_(30)
    h = fit(model, x, y, epochs=3, batch_size=32, learning_rate=0.01, log_every=1, **QUIET)
    assert h.batch_losses[0][0] > -math.log(1e-7) / 2
    assert h.epoch_losses[-1] < h.epoch_losses[0] < h.batch_losses[0][0]


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int64, torch.float32])
def test_images_of_the_wrong_dtype_are_named(dtype: torch.dtype) -> None:
    x, y = synthetic(16)
    model = small_model(dtype=torch.float64)
    with pytest.raises(TypeError, match=rf"images have dtype {dtype} but the model's .*float64"):
        fit(model, x.to(dtype), y, epochs=1, **QUIET)
    with pytest.raises(TypeError, match=rf"images_batch have dtype {dtype}"):
        one_training_step(model, x.to(dtype), y)


# --- evaluate ------------------------------------------------------------------------------


class Fixed(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x  # the inputs are the "probabilities"


def test_evaluate_accuracy(device: torch.device) -> None:
    probs = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]], device=device)
    labels = torch.tensor([0, 1, 1, 0], device=device)
    assert evaluate(Fixed(), probs, labels) == 0.5
    assert evaluate(Fixed(), probs, labels, batch_size=3) == 0.5
    assert evaluate(Fixed(), probs, torch.tensor([0, 1, 0, 1], device=device)) == 1.0
    with pytest.raises(ValueError, match="zero samples: nothing to evaluate"):
        evaluate(Fixed(), probs[:0], labels[:0])


def test_evaluate_refuses_bad_labels_and_non_finite_predictions() -> None:
    probs = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    labels = torch.tensor([0, 1, 1, 0])
    with pytest.raises(ValueError, match=r"shape \(N,\) = \(4,\).*got \(4, 1\)"):
        evaluate(Fixed(), probs, labels[:, None])  # used to broadcast to a number
    with pytest.raises(ValueError, match=r"\[0, 2\).*got 2"):
        evaluate(Fixed(), probs, torch.tensor([0, 1, 2, 0]))
    with pytest.raises(ValueError, match=r">= 0, got -1"):
        evaluate(Fixed(), probs, torch.tensor([0, 1, -1, 0]))
    with pytest.raises(TypeError, match="integer"):
        evaluate(Fixed(), probs, labels.float())
    bad = probs.clone()
    bad[2, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN or inf"):
        evaluate(Fixed(), bad, labels, batch_size=2)
    model = small_model()
    with torch.no_grad():
        model.layers[0].W[0, 0] = float("nan")
    x, y = synthetic(8)
    with pytest.raises(ValueError, match="NaN or inf"):
        evaluate(model, x, y)


def test_fit_passes_gradient_transform_to_every_step() -> None:
    x, y = synthetic(96)
    model = small_model()
    twin = reference_twin(model)
    calls: list[int] = []

    def halve(grads: list[torch.Tensor]) -> list[torch.Tensor]:
        calls.append(1)
        return [g / 2 for g in grads]

    fit(model, x, y, epochs=1, batch_size=32, learning_rate=0.2, gradient_transform=halve, **QUIET)
    ref.fit(twin, x.numpy(), y.numpy(), 1, 32, learning_rate=0.1, print_fn=None)
    assert len(calls) == 3
    assert_weights_match(model, twin)


# --- issue 23: evaluate names what fit names; meta tensors; NaN weights -------------------


def test_evaluate_names_a_dtype_mismatch_as_fit_does() -> None:
    model = small_model(dtype=torch.float64)
    x, y = synthetic(8)
    x = x.float()
    with pytest.raises(TypeError, match=r"images have dtype torch.float32 but the model's "):
        fit(model, x, y, epochs=1, **QUIET)
    with pytest.raises(TypeError, match=r"images have dtype torch.float32 but the model's "):
        evaluate(model, x, y)


def test_evaluate_and_fit_name_images_on_another_device() -> None:
    model = small_model()
    x, y = synthetic(8)
    for call in (
        lambda: fit(model, x.to("meta"), y, epochs=1, **QUIET),
        lambda: evaluate(model, x.to("meta"), y),
    ):
        with pytest.raises(ValueError, match=r"images are on the meta device.*no values"):
            call()
    for call in (
        lambda: fit(model, x, y.to("meta"), epochs=1, **QUIET),
        lambda: evaluate(model, x, y.to("meta")),
    ):
        with pytest.raises(ValueError, match=r"labels are on the meta device.*no values"):
            call()


def test_fit_says_when_a_nan_pixel_made_the_weights_nan() -> None:
    x, y = synthetic(100)
    x[3 * 8 + 2, 0] = float("nan")
    model = small_model()
    with pytest.raises(NonFiniteLossError, match=r"weights now hold NaN/inf") as info:
        fit(model, x, y, epochs=1, batch_size=8, **QUIET)
    assert info.value.weights_finite is False


def test_a_non_finite_loss_with_finite_weights_says_they_are_finite() -> None:
    from dl_ch2.loss_monitor import LossMonitor

    w = torch.ones(3)
    monitor = LossMonitor([w])
    with pytest.raises(NonFiniteLossError, match=r"batch 1; the weights are still finite"):
        monitor.check([torch.tensor(1.0), torch.tensor(float("inf"))], 0)
