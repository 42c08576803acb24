"""§2.5.1: NaiveDense, NaiveSequential, and the chapter's model."""

from __future__ import annotations

import io

import pytest
import torch
from torch.testing import assert_close

from dl_ch2 import NaiveDense, NaiveSequential, build_naive_model, relu, softmax
from dl_ch2.naive_model import uniform_like_tf


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_naive_dense_init_range_shape_and_zero_bias(
    device: torch.device, dtype: torch.dtype
) -> None:
    layer = NaiveDense(784, 512, relu, device=device, dtype=dtype, generator=gen())
    assert layer.W.shape == (784, 512) and layer.b.shape == (512,)
    assert layer.W.dtype == dtype and layer.W.device.type == device.type
    assert torch.all(layer.b == 0)
    w = layer.W.detach()
    assert float(w.min()) >= 0.0 and float(w.max()) < 0.1
    # U[0, 0.1): mean 0.05, std 0.1/sqrt(12); a U[0, 1) or U[-0.05, 0.05) draw would fail
    assert abs(float(w.double().mean()) - 0.05) < 1e-3
    assert abs(float(w.double().std()) - 0.1 / 12**0.5) < 1e-3
    assert float(w.max()) > 0.099 and float(w.min()) < 0.001


def test_uniform_like_tf_never_reaches_maxval(monkeypatch: pytest.MonkeyPatch) -> None:
    # With u = the largest float32 below 1, 1 + u rounds to 2.0 in float32: the
    # interval [1, 2) must stay half-open anyway.
    top = float(torch.nextafter(torch.tensor(1.0), torch.tensor(0.0)))
    real_rand = torch.rand

    def fake_rand(shape, **kwargs):  # type: ignore[no-untyped-def]
        return torch.full(shape, top, dtype=kwargs["dtype"], device=kwargs["device"])

    monkeypatch.setattr(torch, "rand", fake_rand)
    assert float(torch.tensor(top) + 1.0) == 2.0  # the rounding really happens
    w = uniform_like_tf(
        (4,), 1.0, 2.0, dtype=torch.float32, device=torch.device("cpu"), generator=None
    )
    assert float(w.max()) < 2.0
    monkeypatch.setattr(torch, "rand", real_rand)


def test_seeded_init_is_reproducible_and_device_independent(device: torch.device) -> None:
    a = NaiveDense(20, 7, relu, generator=gen(5))
    b = NaiveDense(20, 7, relu, device=device, generator=gen(5))
    c = NaiveDense(20, 7, relu, generator=gen(6))
    assert torch.equal(a.W, b.W.cpu())
    assert not torch.equal(a.W, c.W)


def test_naive_dense_forward(device: torch.device) -> None:
    layer = NaiveDense(6, 4, softmax, device=device, dtype=torch.float64, generator=gen())
    with torch.no_grad():
        layer.b.copy_(torch.linspace(-1, 1, 4, dtype=torch.float64))
    x = torch.randn(3, 6, generator=gen(2), dtype=torch.float64).to(device)
    out = layer(x)
    expected = torch.softmax(x.cpu() @ layer.W.detach().cpu() + layer.b.detach().cpu(), dim=-1)
    assert_close(out.detach().cpu(), expected)
    assert_close(out.sum(dim=-1), torch.ones(3, dtype=torch.float64, device=device))


def test_weights_are_the_parameters_in_book_order(device: torch.device) -> None:
    model = build_naive_model(device=device, generator=gen())
    assert len(model.weights) == 4
    shapes = [tuple(w.shape) for w in model.weights]
    assert shapes == [(784, 512), (512,), (512, 10), (10,)]
    assert all(w is p for w, p in zip(model.weights, model.parameters(), strict=True))
    assert model.weights[0] is model.layers[0].W and model.weights[3] is model.layers[1].b
    out = model(torch.rand(5, 784, generator=gen(3)).to(device))
    assert out.shape == (5, 10)
    assert_close(out.sum(-1), torch.ones(5, device=device))


def test_module_api_to_and_state_dict_roundtrip(tmp_path) -> None:  # type: ignore[no-untyped-def]
    model = build_naive_model(generator=gen())
    m64 = model.to(torch.float64)
    assert all(w.dtype == torch.float64 for w in m64.weights)
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    buf.seek(0)
    fresh = build_naive_model(generator=gen(99))
    fresh.load_state_dict(torch.load(buf, weights_only=True))
    for a, b in zip(model.weights, fresh.to(torch.float64).weights, strict=True):
        assert torch.equal(a, b)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="input_size"):
        NaiveDense(0, 3, relu)
    with pytest.raises(TypeError, match="output_size"):
        NaiveDense(3, 2.5, relu)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="activation"):
        NaiveDense(3, 2, "relu")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="dtype"):
        NaiveDense(3, 2, relu, dtype=torch.int64)
    layer = NaiveDense(3, 2, relu)
    with pytest.raises(ValueError, match=r"\(4, 5\).*input_size=3"):
        layer(torch.zeros(4, 5))
    with pytest.raises(TypeError, match=r"layers\[1\]"):
        NaiveSequential([layer, relu])  # type: ignore[list-item]


def test_an_empty_naive_sequential_is_refused_where_it_is_built() -> None:
    # issue 14: it used to fail in fit with "`inputs` argument to `grad()` cannot be empty"
    with pytest.raises(ValueError, match="layers is empty"):
        NaiveSequential([])
    with pytest.raises(ValueError, match="layers is empty"):
        NaiveSequential(iter(()))


def test_cuda_request_without_cuda_is_a_clear_error() -> None:
    if torch.cuda.is_available():
        pytest.skip("CUDA is present here")
    with pytest.raises(ValueError, match=r"CUDA.*is_available"):
        NaiveDense(3, 2, relu, device="cuda")
    with pytest.raises(ValueError, match="valid torch device"):
        NaiveDense(3, 2, relu, device="gpu0")


def test_naive_dense_forward_reads_as_the_book_writes_it() -> None:
    # §2.5.1: `return self.activation(tf.matmul(inputs, self.W) + self.b)`; no fast path first
    import inspect

    from dl_ch2.naive_model import NaiveDense

    source = inspect.getsource(NaiveDense.forward)
    assert "return self.activation(inputs @ self.W + self.b)" in source
    assert "addmm" not in source and source.count("return ") == 1
