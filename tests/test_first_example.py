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


# --- the fused fast path of train_first_example ------------------------------------------


def _toy(n: int, dtype: torch.dtype, device: torch.device, seed: int = 0):  # type: ignore[no-untyped-def]
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 10, (n,), generator=g)
    prototypes = torch.rand(10, 784, generator=g, dtype=torch.float64)
    images = prototypes[labels] + 0.5 * torch.rand(n, 784, generator=g, dtype=torch.float64)
    return images.clamp(0, 1).to(device=device, dtype=dtype), labels.to(device)


def _deep_model(dtype: torch.dtype, device: torch.device) -> torch.nn.Sequential:
    torch.manual_seed(3)
    nn = torch.nn
    return nn.Sequential(
        nn.Linear(784, 32), nn.ReLU(), nn.Linear(32, 16), nn.Linear(16, 10), nn.ReLU()
    ).to(device=device, dtype=dtype)


def _train_both(make_model, images, labels, epochs, batch_size=64, **opt_kw):  # type: ignore[no-untyped-def]
    out = []
    for fused in (True, False):
        model = make_model()
        opt = keras_rmsprop(model.parameters(), **opt_kw)
        losses = train_first_example(
            model,
            images,
            labels,
            epochs=epochs,
            batch_size=batch_size,
            optimizer=opt,
            generator=torch.Generator().manual_seed(7),
            fused=fused,
        )
        out.append((model, opt, losses))
    return out


@pytest.mark.parametrize("update", ["adam_kernel", "composite"])
@pytest.mark.parametrize("arch", ["book", "deep"])
def test_fused_step_equals_autograd_and_torch_rmsprop(
    device: torch.device,
    dtype: torch.dtype,
    arch: str,
    update: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from dl_ch2 import first_example
    from dl_ch2.first_example import _fused_plan

    monkeypatch.setattr(first_example, "_USE_ADAM_KERNEL", update == "adam_kernel")

    images, labels = _toy(300, dtype, device)  # 300 = 4 batches of 64 and one of 44

    def make() -> torch.nn.Module:
        if arch == "deep":
            return _deep_model(dtype, device)
        return build_first_example_model(
            device=device, dtype=dtype, generator=torch.Generator().manual_seed(0)
        )

    probe = make()
    assert _fused_plan(probe, keras_rmsprop(probe.parameters()), images) is not None
    (fm, fo, fl), (am, ao, al) = _train_both(make, images, labels, epochs=3)
    tol = {"rtol": 1e-10, "atol": 1e-12} if dtype == torch.float64 else {"rtol": 2e-4, "atol": 2e-5}
    assert_close(torch.tensor(fl), torch.tensor(al), **tol)
    assert fl[-1] < fl[0]
    for pf, pa in zip(fm.parameters(), am.parameters(), strict=True):
        assert_close(pf, pa, **tol)
        # the last step's gradient is left in .grad; float32 differences in the weights
        # are amplified by RMSprop's normalisation, so compare on the gradient's scale
        scale = float(pa.grad.abs().max())
        gtol = tol if dtype == torch.float64 else {"rtol": 1e-3, "atol": 1e-3 * scale}
        assert_close(pf.grad, pa.grad, **gtol)
        sf, sa = fo.state[pf], ao.state[pa]
        assert set(sf) == set(sa) == {"step", "square_avg"}
        assert sf["step"].dtype == sa["step"].dtype and float(sf["step"]) == float(sa["step"]) == 15
        assert_close(sf["square_avg"], sa["square_avg"], **tol)


def test_the_one_pass_update_is_taken_on_this_torch(device: torch.device) -> None:
    """Pins that the fast route is live (a torch that drops the kernel fails here, loudly)."""
    from dl_ch2.first_example import _fused_plan

    images, labels = _toy(130, torch.float32, device)
    model = build_first_example_model(device=device, generator=torch.Generator().manual_seed(0))
    opt = keras_rmsprop(model.parameters())
    plan = _fused_plan(model, opt, images)
    assert plan is not None and plan.use_adam_kernel
    perm = torch.randperm(130, generator=torch.Generator().manual_seed(0)).to(device)
    plan.epoch(images, perm, labels.index_select(0, perm), 64)
    assert plan.use_adam_kernel  # it ran without falling back
    assert float(opt.state[model[0].weight]["step"]) == 3


def test_fused_then_torch_step_continues_the_same_state() -> None:
    """Training on with opt.step() (the autograd path) after the fused path loses nothing."""
    images, labels = _toy(200, torch.float64, torch.device("cpu"))
    runs = []
    for first_fused in (True, False):
        model = build_first_example_model(
            dtype=torch.float64, generator=torch.Generator().manual_seed(0)
        )
        opt = keras_rmsprop(model.parameters())
        g = torch.Generator().manual_seed(1)
        for fused in (first_fused, False, first_fused):
            train_first_example(
                model, images, labels, epochs=1, optimizer=opt, generator=g, fused=fused
            )
        runs.append((model, opt))
    (m1, o1), (m2, o2) = runs
    for p1, p2 in zip(m1.parameters(), m2.parameters(), strict=True):
        assert_close(p1, p2, rtol=1e-10, atol=1e-12)
        assert_close(o1.state[p1]["square_avg"], o2.state[p2]["square_avg"], rtol=1e-10, atol=0)
        assert float(o1.state[p1]["step"]) == 3 * 2


def test_fused_plan_declines_what_it_cannot_reproduce() -> None:
    """Anything the hand-written step would get wrong takes torch's own path."""
    from dl_ch2.first_example import _fused_plan

    nn = torch.nn
    x = torch.rand(8, 784)

    def book() -> nn.Sequential:
        return build_first_example_model(generator=torch.Generator().manual_seed(0))

    m = book()
    assert _fused_plan(m, keras_rmsprop(m.parameters()), x) is not None
    assert _fused_plan(m, keras_rmsprop(m.parameters()), x.double()) is None  # dtype mismatch
    assert _fused_plan(m, keras_rmsprop(m.parameters()), x[:, :100]) is None  # wrong width
    assert _fused_plan(m, keras_rmsprop(m.parameters()), x.view(8, 28, 28)) is None
    for kw in ({"momentum": 0.9}, {"centered": True}, {"weight_decay": 1e-4}, {"maximize": True}):
        assert _fused_plan(m, keras_rmsprop(m.parameters(), **kw), x) is None, kw
    assert _fused_plan(m, torch.optim.SGD(m.parameters(), lr=0.1), x) is None
    assert _fused_plan(m, keras_rmsprop(list(m.parameters())[:2]), x) is None  # not all params
    two_groups = [{"params": m[0].parameters()}, {"params": m[2].parameters(), "lr": 1e-2}]
    assert _fused_plan(m, torch.optim.RMSprop(two_groups, alpha=0.9, eps=1e-7), x) is None

    class MyLinear(nn.Linear):
        def forward(self, input: torch.Tensor) -> torch.Tensor:
            return super().forward(input) * 2

    for odd in (
        nn.Sequential(nn.Linear(784, 10), nn.Softmax(dim=1)),
        nn.Sequential(nn.Linear(784, 16), nn.Dropout(0.5), nn.Linear(16, 10)),
        nn.Sequential(nn.Linear(784, 16), nn.ReLU(), nn.ReLU(), nn.Linear(16, 10)),
        nn.Sequential(nn.ReLU(), nn.Linear(784, 10)),
        nn.Sequential(MyLinear(784, 10)),
        nn.Sequential(nn.Linear(784, 10, bias=False)),
        nn.Linear(784, 10),
    ):
        assert _fused_plan(odd, keras_rmsprop(odd.parameters()), x) is None, odd

    frozen = book()
    frozen[0].bias.requires_grad_(False)
    assert _fused_plan(frozen, keras_rmsprop(frozen.parameters()), x) is None

    hooked = book()
    hooked[0].register_forward_hook(lambda *a: None)
    assert _fused_plan(hooked, keras_rmsprop(hooked.parameters()), x) is None
    grad_hooked = book()
    grad_hooked[2].weight.register_hook(lambda g: g)
    assert _fused_plan(grad_hooked, keras_rmsprop(grad_hooked.parameters()), x) is None
    opt_hooked = book()
    o = keras_rmsprop(opt_hooked.parameters())
    o.register_step_post_hook(lambda *a: None)
    assert _fused_plan(opt_hooked, o, x) is None


def test_hooks_still_fire_because_they_disable_fusion() -> None:
    images, labels = _toy(256, torch.float32, torch.device("cpu"))
    model = build_first_example_model(generator=torch.Generator().manual_seed(0))
    calls: list[int] = []
    model[2].register_forward_hook(lambda *a: calls.append(1))
    opt = keras_rmsprop(model.parameters())
    stepped: list[int] = []
    opt.register_step_post_hook(lambda *a: stepped.append(1))
    train_first_example(model, images, labels, epochs=2, optimizer=opt)
    assert len(calls) == len(stepped) == 2 * 2


@pytest.mark.parametrize("fused", [True, False])
def test_labels_are_checked_before_training(fused: bool) -> None:
    model = build_first_example_model(generator=torch.Generator().manual_seed(0))
    before = [p.detach().clone() for p in model.parameters()]
    x = torch.rand(6, 784)
    with pytest.raises(ValueError, match=r"labels .*\[0, 10\).*10"):
        train_first_example(model, x, torch.tensor([0, 1, 2, 3, 4, 10]), fused=fused)
    with pytest.raises(ValueError, match=r"labels .*-1"):
        train_first_example(model, x, torch.tensor([0, 1, -1, 3, 4, 5]), fused=fused)
    with pytest.raises(TypeError, match="labels must hold integer class indices"):
        train_first_example(model, x, torch.zeros(6), fused=fused)
    with pytest.raises(ValueError, match=r"labels must be 1-D"):
        train_first_example(model, x, torch.zeros(6, 1, dtype=torch.long), fused=fused)
    with pytest.raises(ValueError, match=r"labels are on meta but images on cpu"):
        train_first_example(model, x, torch.zeros(6, dtype=torch.long, device="meta"))
    for p, b in zip(model.parameters(), before, strict=True):
        assert torch.equal(p, b)  # nothing moved
