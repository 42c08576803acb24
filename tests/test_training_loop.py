"""§2.5.2-2.5.4: one_training_step, update_weights, fit, evaluate."""

from __future__ import annotations

import copy

import pytest
import torch
from torch.testing import assert_close

from dl_ch2 import (
    NaiveDense,
    NaiveSequential,
    NonFiniteLossError,
    evaluate,
    fit,
    one_training_step,
    relu,
    softmax,
    sparse_categorical_crossentropy,
    update_weights,
)


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


def test_one_training_step_is_w_minus_lr_grad(device: torch.device) -> None:
    model = small_model(device)
    x, y = synthetic(32, device)
    before = [w.detach().clone() for w in model.weights]
    # expected gradients from an independent computation on a deep copy
    twin = copy.deepcopy(model)
    loss = sparse_categorical_crossentropy(y, twin(x)).mean()
    grads = torch.autograd.grad(loss, twin.weights)
    returned = one_training_step(model, x, y, learning_rate=0.05)
    assert returned.ndim == 0 and not returned.requires_grad
    assert_close(returned, loss.detach())
    for w, w0, g in zip(model.weights, before, grads, strict=True):
        assert_close(w.detach(), w0 - 0.05 * g)
        assert not torch.equal(w.detach(), w0)


def test_default_learning_rate_is_1e_minus_3() -> None:
    model, twin = small_model(), small_model()
    x, y = synthetic(16)
    one_training_step(model, x, y)
    one_training_step(twin, x, y, learning_rate=1e-3)
    for a, b in zip(model.weights, twin.weights, strict=True):
        assert torch.equal(a, b)


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


@pytest.mark.parametrize("momentum", [0.0])
def test_torch_sgd_optimizer_gives_same_weights_as_manual(
    device: torch.device, momentum: float
) -> None:
    manual, with_opt = small_model(device), small_model(device)
    opt = torch.optim.SGD(with_opt.parameters(), lr=1e-3, momentum=momentum)
    x, y = synthetic(64, device)
    for k in range(0, 64, 16):
        la = one_training_step(manual, x[k : k + 16], y[k : k + 16], learning_rate=1e-3)
        lb = one_training_step(with_opt, x[k : k + 16], y[k : k + 16], optimizer=opt)
        assert torch.equal(la, lb)
    for a, b in zip(manual.weights, with_opt.weights, strict=True):
        assert torch.equal(a, b)
        assert b.grad is None  # the step leaves no stale gradients behind


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
            print_fn=None,
            progress=False,
        )
        runs.append((h.batch_losses, [w.detach().clone() for w in model.weights]))
    assert runs[0][0] == runs[1][0]
    unshuffled = fit(small_model(), x, y, epochs=1, batch_size=32, print_fn=None, progress=False)
    assert unshuffled.batch_losses != runs[0][0]


def test_fit_stops_on_non_finite_loss_naming_epoch_and_batch() -> None:
    x, y = synthetic(100)
    x[3 * 8 + 2, 0] = float("nan")  # sample in batch 3 at batch_size 8
    with pytest.raises(NonFiniteLossError, match=r"epoch 0, batch 3") as info:
        fit(small_model(), x, y, epochs=2, batch_size=8, print_fn=None, progress=False)
    assert info.value.epoch == 0 and info.value.batch == 3


def test_fit_progress_bar_goes_to_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    x, y = synthetic(64)
    fit(small_model(), x, y, epochs=1, batch_size=8, print_fn=None, progress=True)
    captured = capsys.readouterr()
    assert "epoch 0" in captured.err and "/8" in captured.err and captured.out == ""


def test_fit_bad_input() -> None:
    x, y = synthetic(10)
    with pytest.raises(ValueError, match="same number of samples"):
        fit(small_model(), x, y[:9], epochs=1, print_fn=None)
    with pytest.raises(ValueError, match="epochs"):
        fit(small_model(), x, y, epochs=0, print_fn=None)
    with pytest.raises(ValueError, match="batch_size"):
        fit(small_model(), x, y, epochs=1, batch_size=0, print_fn=None)


def test_evaluate_accuracy(device: torch.device) -> None:
    class Fixed(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x  # the inputs are the "probabilities"

    probs = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]], device=device)
    labels = torch.tensor([0, 1, 1, 0], device=device)
    assert evaluate(Fixed(), probs, labels) == 0.5
    assert evaluate(Fixed(), probs, labels, batch_size=3) == 0.5
    assert evaluate(Fixed(), probs, torch.tensor([0, 1, 0, 1], device=device)) == 1.0
    with pytest.raises(ValueError, match="zero samples"):
        evaluate(Fixed(), probs[:0], labels[:0])


def test_training_improves_accuracy_on_separable_data() -> None:
    x, y = synthetic(600)
    model = small_model()
    before = evaluate(model, x, y)
    fit(model, x, y, epochs=5, batch_size=32, learning_rate=0.1, print_fn=None, progress=False)
    after = evaluate(model, x, y)
    assert after > 0.95 and after > before


def test_fused_fit_equals_the_books_step(device: torch.device) -> None:
    """fit's fused step (update folded into the weight-gradient GEMM) is the same math."""
    x, y = synthetic(300, device)
    fused, book = small_model(device), small_model(device)
    h1 = fit(
        fused,
        x,
        y,
        epochs=2,
        batch_size=32,
        learning_rate=0.05,
        print_fn=None,
        progress=False,
        fused=True,
    )
    h2 = fit(
        book,
        x,
        y,
        epochs=2,
        batch_size=32,
        learning_rate=0.05,
        print_fn=None,
        progress=False,
        fused=False,
    )
    assert h1.batch_losses != [] and len(h1.batch_losses[0]) == 10
    for a, b in zip(h1.batch_losses, h2.batch_losses, strict=True):
        assert a == pytest.approx(b, rel=1e-12)
    for wa, wb in zip(fused.weights, book.weights, strict=True):
        assert_close(wa.detach(), wb.detach(), rtol=1e-12, atol=1e-14)
    start = small_model(device)
    assert not torch.equal(fused.weights[0].detach(), start.weights[0].detach())


def test_fit_with_optimizer_or_other_model_uses_the_books_step() -> None:
    x, y = synthetic(64)
    model = small_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    twin = small_model()
    fit(model, x, y, epochs=1, batch_size=16, optimizer=opt, print_fn=None, progress=False)
    fit(
        twin,
        x,
        y,
        epochs=1,
        batch_size=16,
        learning_rate=0.05,
        print_fn=None,
        progress=False,
        fused=False,
    )
    for a, b in zip(model.weights, twin.weights, strict=True):
        assert torch.equal(a, b)


def test_fused_fit_with_a_custom_activation_uses_autograd_to_z() -> None:
    """Activations without a written-out backward go through autograd, same result."""

    def make() -> NaiveSequential:
        gen = torch.Generator().manual_seed(0)
        return NaiveSequential(
            [
                NaiveDense(12, 8, torch.tanh, dtype=torch.float64, generator=gen),
                NaiveDense(8, 3, softmax, dtype=torch.float64, generator=gen),
            ]
        )

    x, y = synthetic(200)
    a, b = make(), make()
    fit(a, x, y, epochs=1, batch_size=20, learning_rate=0.1, print_fn=None, progress=False)
    fit(
        b,
        x,
        y,
        epochs=1,
        batch_size=20,
        learning_rate=0.1,
        print_fn=None,
        progress=False,
        fused=False,
    )
    for wa, wb in zip(a.weights, b.weights, strict=True):
        assert_close(wa.detach(), wb.detach(), rtol=1e-12, atol=1e-14)


def test_fit_does_not_fuse_a_layer_with_its_own_forward() -> None:
    class Scaled(NaiveDense):
        def forward(self, inputs: torch.Tensor) -> torch.Tensor:
            return super().forward(inputs) * 1.0 + 0.0  # same values, but an unknown forward

    from dl_ch2.training_loop import _fusable_layers

    g = torch.Generator().manual_seed(0)
    plain = NaiveSequential([NaiveDense(12, 3, softmax, generator=g)])
    custom = NaiveSequential([Scaled(12, 3, softmax, generator=g)])
    x = torch.zeros(4, 12)
    assert _fusable_layers(plain, x) is not None
    assert _fusable_layers(custom, x) is None
