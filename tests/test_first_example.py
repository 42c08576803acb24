"""§2.1: the first example in PyTorch with Keras' init, RMSprop and fit semantics."""

from __future__ import annotations

import math

import pytest
import torch
from torch.testing import assert_close

from dl_ch2 import (
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
    with pytest.raises(ValueError, match="equal length"):
        train_first_example(model, torch.zeros(4, 784), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="epochs"):
        train_first_example(model, torch.zeros(4, 784), torch.zeros(4, dtype=torch.long), epochs=0)
