"""§2.1: the first example in PyTorch with Keras' init, RMSprop and fit semantics."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.testing import assert_close

import conformance.reference as ref
from dl_ch2 import (
    NonFiniteLossError,
    build_first_example_model,
    keras_rmsprop,
    num_batches,
    predict,
    train_first_example,
)
from dl_ch2.first_example import glorot_uniform_limit


def test_architecture_and_keras_init(device: torch.device) -> None:
    model = build_first_example_model(device=device, generator=torch.Generator().manual_seed(0))
    first, last = model[0], model[2]
    assert isinstance(first, torch.nn.Linear) and isinstance(last, torch.nn.Linear)
    assert isinstance(model[1], torch.nn.ReLU)
    assert (first.in_features, first.out_features) == (784, 512)
    assert (last.in_features, last.out_features) == (512, 10)
    for layer, fan_in, fan_out in ((first, 784, 512), (last, 512, 10)):
        limit = math.sqrt(6 / (fan_in + fan_out))
        assert glorot_uniform_limit(fan_in, fan_out) == pytest.approx(limit)
        w = layer.weight.detach().double()
        assert float(w.abs().max()) <= limit
        assert float(w.abs().max()) > 0.98 * limit  # fills the range (torch's default would not)
        assert abs(float(w.mean())) < 0.05 * limit
        assert float(w.std()) == pytest.approx(limit / math.sqrt(3), rel=0.05)
        assert torch.all(layer.bias == 0)
    assert glorot_uniform_limit(784, 512) == pytest.approx(0.06804, abs=1e-5)


def test_keras_rmsprop_defaults_and_update_rule() -> None:
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0], dtype=torch.float64))
    opt = keras_rmsprop([p])
    group = opt.param_groups[0]
    assert group["lr"] == 1e-3 and group["alpha"] == 0.9 and group["eps"] == 1e-7
    assert group["momentum"] == 0 and group["centered"] is False
    # Keras 2.6: rms = rho*rms + (1-rho) g^2; w -= lr * g / (sqrt(rms) + eps), eps outside sqrt
    w, rms = p.detach().clone(), torch.zeros(2, dtype=torch.float64)
    w_inside = w.clone()
    for step in range(5):
        g = torch.tensor([0.3, -1e-4], dtype=torch.float64) * (step + 1)
        rms = 0.9 * rms + 0.1 * g * g
        w = w - 1e-3 * g / (torch.sqrt(rms) + 1e-7)
        w_inside = w_inside - 1e-3 * g / torch.sqrt(rms + 1e-7)
        p.grad = g.clone()
        opt.step()
    assert_close(p.detach(), w, rtol=1e-14, atol=1e-15)
    # the tiny gradient makes "eps inside the square root" measurably different
    assert abs(float(p.detach()[1]) - float(w_inside[1])) > 1e-4


def test_steps_per_epoch() -> None:
    assert num_batches(60000, 128) == 469
    assert 5 * num_batches(60000, 128) == 2345


def test_train_first_example_step_count_reshuffling_and_learning() -> None:
    g = torch.Generator().manual_seed(0)
    n = 1000
    labels = torch.randint(0, 10, (n,), generator=g)
    prototypes = torch.rand(10, 784, generator=g)
    images = (prototypes[labels] + 0.5 * torch.rand(n, 784, generator=g)).clamp(0, 1)
    model = build_first_example_model(generator=g)
    opt = keras_rmsprop(model.parameters())
    seen: list[tuple[int, float]] = []
    losses = train_first_example(
        model,
        images,
        labels,
        epochs=3,
        optimizer=opt,
        generator=torch.Generator().manual_seed(1),
        on_epoch_end=lambda e, loss: seen.append((e, loss)),
    )
    steps = int(opt.state[model[0].weight]["step"])
    assert steps == 3 * math.ceil(n / 128) == 24
    assert [e for e, _ in seen] == [0, 1, 2] and losses == [v for _, v in seen]
    assert losses[-1] < losses[0]
    probs = predict(model, images[:50])
    assert_close(probs.sum(dim=1), torch.ones(50))
    assert float((probs.argmax(1) == labels[:50]).float().mean()) > 0.9


def test_train_first_example_is_seeded() -> None:
    def run() -> list[float]:
        g = torch.Generator().manual_seed(0)
        x, y = torch.rand(300, 784, generator=g), torch.randint(0, 10, (300,), generator=g)
        m = build_first_example_model(generator=g)
        return train_first_example(m, x, y, epochs=2, generator=torch.Generator().manual_seed(5))

    assert run() == run()


def test_bad_input() -> None:
    model = build_first_example_model()
    with pytest.raises(ValueError, match=r"shape \(N,\) = \(4,\)"):
        train_first_example(model, torch.zeros(4, 784), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="epochs"):
        train_first_example(model, torch.zeros(4, 784), torch.zeros(4, dtype=torch.long), epochs=0)


# --- the Keras-faithful step: autograd + torch.optim.RMSprop, against the NumPy reference ---


def _toy(n: int, dtype: torch.dtype = torch.float64, seed: int = 0):  # type: ignore[no-untyped-def]
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 10, (n,), generator=g)
    prototypes = torch.rand(10, 784, generator=g, dtype=torch.float64)
    images = prototypes[labels] + 0.5 * torch.rand(n, 784, generator=g, dtype=torch.float64)
    return images.clamp(0, 1).to(dtype), labels


class TorchPermutations:
    """Hands the reference the permutations torch.randperm draws, so both see one order."""

    def __init__(self, seed: int) -> None:
        self.g = torch.Generator().manual_seed(seed)

    def permutation(self, n: int) -> np.ndarray:
        return torch.randperm(n, generator=self.g).numpy()


def reference_twin(model: torch.nn.Module) -> ref.FirstExampleModel:
    twin = ref.FirstExampleModel(dtype=np.float64, rng=np.random.default_rng(0))
    for w, p in zip(twin.weights, model.parameters(), strict=True):
        w[...] = p.detach().double().numpy()
    return twin


def test_train_first_example_is_the_references_keras_fit() -> None:
    images, labels = _toy(300)  # 300 = 4 batches of 64 and one of 44
    model = build_first_example_model(
        dtype=torch.float64, generator=torch.Generator().manual_seed(0)
    )
    twin = reference_twin(model)
    losses = train_first_example(
        model, images, labels, epochs=3, batch_size=64, generator=torch.Generator().manual_seed(7)
    )
    expected = ref.train_first_example(
        twin,
        images.numpy(),
        labels.numpy(),
        epochs=3,
        batch_size=64,
        rng=TorchPermutations(7),  # type: ignore[arg-type]
    )
    np.testing.assert_allclose(losses, expected, rtol=1e-10)
    assert losses[-1] < losses[0]
    for p, w in zip(model.parameters(), twin.weights, strict=True):
        np.testing.assert_allclose(p.detach().numpy(), w, rtol=1e-9, atol=1e-12)


def test_hooks_fire_on_every_batch() -> None:
    images, labels = _toy(256, torch.float32)
    model = build_first_example_model(generator=torch.Generator().manual_seed(0))
    calls: list[int] = []
    model[2].register_forward_hook(lambda *a: calls.append(1))
    opt = keras_rmsprop(model.parameters())
    stepped: list[int] = []
    opt.register_step_post_hook(lambda *a: stepped.append(1))
    train_first_example(model, images, labels, epochs=2, optimizer=opt)
    assert len(stepped) == 2 * 2
    assert len(calls) == 1 + 2 * 2  # one look at the model's width, then every batch


def test_a_zeroing_gradient_hook_and_a_frozen_weight_keep_their_weights_still() -> None:
    images, labels = _toy(256, torch.float32)
    model = build_first_example_model(generator=torch.Generator().manual_seed(0))
    model[2].weight.register_hook(torch.zeros_like)
    model[0].bias.requires_grad_(False)
    still = [model[2].weight.detach().clone(), model[0].bias.detach().clone()]
    moving = model[0].weight.detach().clone()
    train_first_example(model, images, labels, epochs=1, batch_size=64)
    assert torch.equal(model[2].weight.detach(), still[0])
    assert torch.equal(model[0].bias.detach(), still[1])
    assert not torch.equal(model[0].weight.detach(), moving)


def test_a_nan_pixel_stops_training_naming_epoch_and_batch() -> None:
    images, labels = _toy(300, torch.float32)
    images[5, 100] = float("nan")
    g = torch.Generator().manual_seed(3)
    batch = int((torch.randperm(300, generator=g) == 5).nonzero()) // 64
    model = build_first_example_model(generator=torch.Generator().manual_seed(0))
    with pytest.raises(NonFiniteLossError, match=rf"epoch 0, batch {batch}\b") as info:
        train_first_example(
            model, images, labels, batch_size=64, generator=torch.Generator().manual_seed(3)
        )
    assert (info.value.epoch, info.value.batch) == (0, batch)


BAD_RATES = [("0.1", TypeError), (-1.0, ValueError), (0.0, ValueError)]
BAD_RATES += [(float("nan"), ValueError), (float("inf"), ValueError)]


@pytest.mark.parametrize(("rate", "error"), BAD_RATES)
def test_learning_rate_must_be_positive_and_finite(rate: object, error: type[Exception]) -> None:
    images, labels = _toy(8, torch.float32)
    model = build_first_example_model(generator=torch.Generator().manual_seed(0))
    with pytest.raises(error, match="learning_rate"):
        train_first_example(model, images, labels, learning_rate=rate)  # type: ignore[arg-type]
    if not isinstance(rate, str) and rate >= 0:  # torch's own check refuses the others
        opt = keras_rmsprop(model.parameters(), lr=rate)  # type: ignore[arg-type]
        with pytest.raises(error, match="learning_rate"):
            train_first_example(model, images, labels, optimizer=opt)
    with pytest.raises(ValueError, match="not both"):
        train_first_example(
            model, images, labels, learning_rate=0.1, optimizer=keras_rmsprop(model.parameters())
        )


def test_a_learning_rate_builds_keras_rmsprop_with_it() -> None:
    images, labels = _toy(64)
    a = build_first_example_model(dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    twin = reference_twin(a)
    train_first_example(
        a, images, labels, epochs=1, learning_rate=0.01, generator=torch.Generator().manual_seed(1)
    )
    ref.train_first_example(
        twin,
        images.numpy(),
        labels.numpy(),
        epochs=1,
        optimizer=ref.RMSprop(learning_rate=0.01),
        rng=TorchPermutations(1),  # type: ignore[arg-type]
    )
    for p, w in zip(a.parameters(), twin.weights, strict=True):
        np.testing.assert_allclose(p.detach().numpy(), w, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int64, torch.float64])
def test_images_of_the_wrong_dtype_are_named(dtype: torch.dtype) -> None:
    model = build_first_example_model(generator=torch.Generator().manual_seed(0))
    with pytest.raises(TypeError, match=rf"images have dtype {dtype} but .* torch.float32"):
        train_first_example(
            model, torch.zeros(4, 784, dtype=dtype), torch.zeros(4, dtype=torch.long)
        )


def test_labels_are_checked_before_training() -> None:
    model = build_first_example_model(generator=torch.Generator().manual_seed(0))
    before = [p.detach().clone() for p in model.parameters()]
    x = torch.rand(6, 784)
    with pytest.raises(ValueError, match=r"labels .*\[0, 10\).*10"):
        train_first_example(model, x, torch.tensor([0, 1, 2, 3, 4, 10]))
    with pytest.raises(ValueError, match=r"labels .*-1"):
        train_first_example(model, x, torch.tensor([0, 1, -1, 3, 4, 5]))
    with pytest.raises(TypeError, match="labels must hold integer class indices"):
        train_first_example(model, x, torch.zeros(6))
    with pytest.raises(ValueError, match=r"labels must have shape \(N,\)"):
        train_first_example(model, x, torch.zeros(6, 1, dtype=torch.long))
    with pytest.raises(ValueError, match=r"labels are on the meta device.*no values"):
        train_first_example(model, x, torch.zeros(6, dtype=torch.long, device="meta"))
    with pytest.raises(ValueError, match=r"images are on the meta device.*no values"):
        train_first_example(model, x.to("meta"), torch.zeros(6, dtype=torch.long))
    for p, b in zip(model.parameters(), before, strict=True):
        assert torch.equal(p, b)  # nothing moved


def test_a_nan_pixel_error_says_the_weights_are_now_nan() -> None:
    # the bad batch's update carries the NaN into every weight: the error must say so
    images, labels = _toy(300, torch.float32)
    images[5, 100] = float("nan")
    model = build_first_example_model(generator=torch.Generator().manual_seed(0))
    with pytest.raises(NonFiniteLossError, match=r"weights now hold NaN/inf") as info:
        train_first_example(model, images, labels, batch_size=64)
    assert info.value.weights_finite is False
    assert not all(bool(torch.isfinite(p).all()) for p in model.parameters())


# --- the two RMSprops (issue 23): Keras 2.6's and TF 2.11+ / Keras 3's ----------------------


def _one_rmsprop_step(variant: str, g: float) -> float:
    """w = 1 with loss g * w, so the gradient is exactly g; one step of the named RMSprop."""
    w = torch.nn.Parameter(torch.tensor([1.0], dtype=torch.float64))
    opt = keras_rmsprop([w], variant)
    (g * w).sum().backward()  # type: ignore[no-untyped-call]
    opt.step()
    return float(w.detach())


def test_the_two_rmsprops_put_epsilon_outside_and_inside_the_root() -> None:
    # by hand: v = (1 - 0.9) * g**2 = 1e-7 for g = 1e-3; lr = 1e-3, eps = 1e-7
    g = 1e-3
    keras26 = 1.0 - 1e-3 * g / (math.sqrt(1e-7) + 1e-7)  # eps outside: 1 - 3.161278e-3
    keras3 = 1.0 - 1e-3 * g / math.sqrt(1e-7 + 1e-7)  # eps inside: 1 - sqrt(5) * 1e-3
    assert keras26 == pytest.approx(0.996838722, abs=1e-9)
    assert keras3 == pytest.approx(0.997763932, abs=1e-9)
    assert _one_rmsprop_step("keras-2.6", g) == pytest.approx(keras26, rel=1e-12)
    assert _one_rmsprop_step("keras-3", g) == pytest.approx(keras3, rel=1e-12)
    # the default is the book's
    w = torch.nn.Parameter(torch.tensor([1.0], dtype=torch.float64))
    assert isinstance(keras_rmsprop([w]), torch.optim.RMSprop)


def test_keras3_rmsprop_second_step_by_hand() -> None:
    # g = 1e-3 then g = 2e-3: v1 = 1e-7, v2 = 0.9e-7 + 0.1 * 4e-6 = 4.9e-7
    w = torch.nn.Parameter(torch.tensor([1.0], dtype=torch.float64))
    opt = keras_rmsprop([w], "keras-3")
    for g in (1e-3, 2e-3):
        opt.zero_grad()
        (g * w).sum().backward()  # type: ignore[no-untyped-call]
        opt.step()
    want = 1.0 - 1e-6 / math.sqrt(2e-7) - 2e-6 / math.sqrt(4.9e-7 + 1e-7)
    assert float(w.detach()) == pytest.approx(want, rel=1e-12)


def test_an_unknown_rmsprop_is_refused_naming_the_choices() -> None:
    model = build_first_example_model(generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match=r"keras-2\.6, keras-3, got 'tf'"):
        train_first_example(
            model, torch.rand(4, 784), torch.zeros(4, dtype=torch.long), rmsprop="tf"
        )


def test_train_first_example_uses_the_rmsprop_it_is_told() -> None:
    images, labels = _toy(256, torch.float64)
    runs = {}
    for variant in ("keras-2.6", "keras-3"):
        model = build_first_example_model(
            dtype=torch.float64, generator=torch.Generator().manual_seed(0)
        )
        twin = build_first_example_model(
            dtype=torch.float64, generator=torch.Generator().manual_seed(0)
        )
        g = torch.Generator().manual_seed(1)
        runs[variant] = train_first_example(
            model, images, labels, epochs=1, batch_size=64, generator=g, rmsprop=variant
        )
        opt = keras_rmsprop(twin.parameters(), variant)
        twin_losses = train_first_example(
            twin,
            images,
            labels,
            epochs=1,
            batch_size=64,
            optimizer=opt,
            generator=torch.Generator().manual_seed(1),
        )
        assert runs[variant] == twin_losses
    assert runs["keras-2.6"] != runs["keras-3"]


# --- §2.1's printed `accuracy`: Keras' running mean over the epoch's batches ---


def _plain_pytorch_keras_fit(
    model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, epochs: int, seed: int
) -> list[float]:
    """An ordinary PyTorch loop doing what Keras' fit does; each epoch's running accuracy.

    Keras scores each batch with the predictions of its forward pass, before the update,
    and prints the mean over the samples seen so far in the epoch.
    """
    opt = torch.optim.RMSprop(model.parameters(), lr=1e-3, alpha=0.9, eps=1e-7)
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(epochs):
        perm = torch.randperm(len(images), generator=g)
        correct = 0
        for k in range(0, len(images), 128):
            x, y = images[perm[k : k + 128]], labels[perm[k : k + 128]]
            logits = model(x)
            correct += int((logits.argmax(1) == y).sum())
            loss = torch.nn.functional.cross_entropy(logits, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        out.append(correct / len(images))
    return out


def test_keras_accuracy_is_the_running_mean_of_a_plain_pytorch_loop() -> None:
    images, labels = _toy(700, torch.float32, seed=4)
    model = build_first_example_model(generator=torch.Generator().manual_seed(0))
    twin = build_first_example_model(generator=torch.Generator().manual_seed(0))
    keras_accuracy: list[float] = []
    full_set: list[float] = []

    def after_epoch(_epoch: int, _loss: float) -> None:  # what the port printed before
        full_set.append(float((predict(model, images).argmax(1) == labels).float().mean()))

    train_first_example(
        model,
        images,
        labels,
        epochs=3,
        generator=torch.Generator().manual_seed(2),
        keras_accuracy=keras_accuracy,
        on_epoch_end=after_epoch,
        print_fn=(lines := []).append,
    )
    expected = _plain_pytorch_keras_fit(twin, images, labels, 3, seed=2)
    assert len(lines) == 3 and lines[0].startswith("Epoch 1/3: 6 steps - loss: ")
    assert lines[0].endswith(f" - accuracy: {expected[0]:.4f}")  # Keras' line, its figure
    assert keras_accuracy == pytest.approx(expected, abs=1.5 / 700)  # one sample's worth
    assert len(full_set) == 3 and keras_accuracy[0] < full_set[0]  # a different quantity


def test_keras_accuracy_matches_the_numpy_reference() -> None:
    images, labels = _toy(300)
    model = build_first_example_model(
        dtype=torch.float64, generator=torch.Generator().manual_seed(0)
    )
    twin = reference_twin(model)
    got: list[float] = []
    train_first_example(
        model,
        images,
        labels,
        epochs=2,
        batch_size=64,
        generator=torch.Generator().manual_seed(7),
        keras_accuracy=got,
    )
    expected: list[float] = []
    ref.train_first_example(
        twin,
        images.numpy(),
        labels.numpy(),
        epochs=2,
        batch_size=64,
        rng=TorchPermutations(7),  # type: ignore[arg-type]
        keras_accuracy=expected,
    )
    assert got == expected and len(got) == 2
    assert all(abs(v * 300 - round(v * 300)) < 1e-9 for v in got)  # counts over 300 samples


def test_train_first_example_takes_the_books_numpy_arrays() -> None:
    images, labels = _toy(200, torch.float32)
    a = build_first_example_model(generator=torch.Generator().manual_seed(0))
    b = build_first_example_model(generator=torch.Generator().manual_seed(0))
    from_numpy = train_first_example(
        a,
        images.numpy(),
        labels.numpy().astype(np.uint8),
        epochs=1,
        generator=torch.Generator().manual_seed(1),
    )
    from_tensors = train_first_example(
        b, images, labels, epochs=1, generator=torch.Generator().manual_seed(1)
    )
    assert from_numpy == from_tensors
