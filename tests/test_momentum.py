"""§2.4.3: the book's momentum rule, Keras SGD, and torch.optim.SGD correspondence."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from dl_ch2 import keras_sgd_update, naive_momentum_update, sgd_path
from dl_ch2.momentum import (
    GLOBAL_MINIMUM,
    LOCAL_MINIMUM,
    keras_velocity_from_torch_buffer,
    local_global_curve,
    local_global_curve_grad,
)


def quad_grad(w: torch.Tensor) -> torch.Tensor:
    """Gradient of sum(c * w**2 / 2) with distinct curvatures per entry."""
    return torch.tensor([1.0, 3.0, 0.5], dtype=torch.float64) * w


def test_book_rule_single_step_by_hand() -> None:
    w, g, v = torch.tensor(1.0), torch.tensor(2.0), torch.tensor(0.5)
    w1, v1 = naive_momentum_update(w, g, v, learning_rate=0.1, momentum=0.9)
    assert float(v1) == pytest.approx(0.5 * 0.9 - 0.1 * 2.0)  # 0.25
    assert float(w1) == pytest.approx(1.0 + 0.9 * 0.25 - 0.1 * 2.0)  # 1.025
    # from rest, the velocity points downhill (the 1st edition's "+ lr * g" points uphill)
    w2, v2 = naive_momentum_update(w, g, torch.tensor(0.0), learning_rate=0.1, momentum=0.9)
    assert float(v2) == pytest.approx(-0.2) and float(w2) == pytest.approx(0.62)


def test_book_rule_is_keras_nesterov() -> None:
    w_a = w_b = torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64)
    v_a = v_b = torch.zeros(3, dtype=torch.float64)
    for _ in range(20):
        w_a, v_a = naive_momentum_update(w_a, quad_grad(w_a), v_a, 0.1, 0.9)
        w_b, v_b = keras_sgd_update(w_b, quad_grad(w_b), v_b, 0.1, 0.9, nesterov=True)
    assert torch.equal(w_a, w_b)
    w_c, v_c = (
        torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64),
        torch.zeros(3, dtype=torch.float64),
    )
    for _ in range(20):
        w_c, v_c = keras_sgd_update(w_c, quad_grad(w_c), v_c, 0.1, 0.9, nesterov=False)
    assert not torch.allclose(w_a, w_c)  # plain momentum is a different trajectory


@pytest.mark.parametrize("nesterov", [False, True])
@pytest.mark.parametrize("momentum", [0.5, 0.9])
def test_keras_sgd_equals_torch_sgd_over_20_steps(nesterov: bool, momentum: float) -> None:
    lr = 0.05
    w0 = torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64)
    p = torch.nn.Parameter(w0.clone())
    opt = torch.optim.SGD([p], lr=lr, momentum=momentum, nesterov=nesterov)
    w, v = w0.clone(), torch.zeros(3, dtype=torch.float64)
    for _ in range(20):
        w, v = keras_sgd_update(w, quad_grad(w), v, lr, momentum, nesterov)
        p.grad = quad_grad(p.detach())
        opt.step()
        assert_close(p.detach(), w, rtol=1e-12, atol=1e-14)
        buf = opt.state[p]["momentum_buffer"]
        assert_close(keras_velocity_from_torch_buffer(buf, lr), v, rtol=1e-12, atol=1e-14)


def test_keras_sgd_without_momentum_is_plain_sgd() -> None:
    w = torch.tensor([2.0])
    w1, v1 = keras_sgd_update(w, torch.tensor([4.0]), torch.zeros(1), 0.1)
    assert float(w1) == pytest.approx(1.6) and float(v1) == pytest.approx(-0.4)
    with pytest.raises(ValueError, match="momentum"):
        keras_sgd_update(w, w, w, 0.1, momentum=-0.1)


def test_local_and_global_minimum_with_and_without_momentum() -> None:
    assert local_global_curve_grad(LOCAL_MINIMUM) == pytest.approx(0, abs=1e-7)
    assert local_global_curve_grad(GLOBAL_MINIMUM) == pytest.approx(0, abs=1e-7)
    assert local_global_curve(GLOBAL_MINIMUM) < local_global_curve(LOCAL_MINIMUM)
    plain = sgd_path(local_global_curve_grad, 2.5, 0.01, 2000)
    rolling = sgd_path(local_global_curve_grad, 2.5, 0.01, 2000, momentum=0.9)
    assert plain[-1] == pytest.approx(LOCAL_MINIMUM, abs=1e-6)
    assert rolling[-1] == pytest.approx(GLOBAL_MINIMUM, abs=1e-6)
    assert min(rolling) < 0 < max(rolling)  # it crossed the hump near w = 0.15
