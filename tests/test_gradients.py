"""§2.4: derivatives, SGD on a curve, the chain rule, the computation graph, GradientTape."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.testing import assert_close

from dl_ch2 import GradientTape, ScalarGraph, chain_rule, derivative, sgd_path, variable

ROOT = Path(__file__).resolve().parents[1]


def test_derivative_is_local_slope() -> None:
    assert derivative(math.sin, 0.3) == pytest.approx(math.cos(0.3), rel=1e-9)
    assert derivative(lambda x: 3 * x + 1, 7.0) == pytest.approx(3.0, rel=1e-9)
    assert derivative(math.cos, 1.0) == pytest.approx(-math.sin(1.0), rel=1e-9)
    with pytest.raises(ValueError, match="eps"):
        derivative(math.sin, 0.0, eps=0.0)


def test_chain_rule_two_and_four_functions_against_finite_differences() -> None:
    g, dg = (lambda x: x**2 + 1), (lambda x: 2 * x)
    f, df = math.sin, math.cos
    value, slope = chain_rule([g, f], [dg, df], 0.7)
    assert value == pytest.approx(math.sin(0.7**2 + 1))
    assert slope == pytest.approx(math.cos(0.7**2 + 1) * 2 * 0.7, rel=1e-12)
    assert slope == pytest.approx(derivative(lambda x: f(g(x)), 0.7), rel=1e-7)
    j, dj = (lambda x: 3 * x), (lambda x: 3.0)
    h, dh = math.exp, math.exp
    fns, ders = [j, h, g, f], [dj, dh, dg, df]
    value, slope = chain_rule(fns, ders, 0.2)
    composed = lambda x: f(g(h(j(x))))  # noqa: E731
    assert value == pytest.approx(composed(0.2))
    assert slope == pytest.approx(derivative(composed, 0.2), rel=1e-6)
    with pytest.raises(ValueError, match="2 functions but 1"):
        chain_rule([g, f], [dg], 1.0)


def test_gradient_tape_scalar() -> None:
    x = variable(0.0)
    with GradientTape() as tape:
        y = 2 * x + 3
    grad = tape.gradient(y, x)
    assert isinstance(grad, torch.Tensor) and grad.shape == () and float(grad) == 2.0


def test_gradient_tape_matrix_variable_gives_all_twos(device: torch.device) -> None:
    x = variable(torch.rand(2, 2, generator=torch.Generator().manual_seed(0)).to(device))
    with GradientTape() as tape:
        y = 2 * x + 3
    grad = tape.gradient(y, x)
    assert isinstance(grad, torch.Tensor)
    assert torch.equal(grad, torch.full((2, 2), 2.0, device=device))


def test_gradient_tape_dense_layer_gradients_are_of_the_sum(device: torch.device) -> None:
    g = torch.Generator().manual_seed(0)
    W = variable(torch.rand(2, 2, generator=g, dtype=torch.float64).to(device))
    b = variable(torch.zeros(2, dtype=torch.float64, device=device))
    x = torch.rand(2, 2, generator=g, dtype=torch.float64).to(device)
    with GradientTape() as tape:
        y = x @ W + b
    grad_w, grad_b = tape.gradient(y, [W, b])
    # d sum(xW + b)/dW[i, j] = sum_k x[k, i]; d/db = number of rows
    col_sums = x.sum(dim=0)
    assert_close(grad_w, col_sums[:, None].expand(2, 2))
    assert_close(grad_b, torch.full((2,), 2.0, dtype=torch.float64, device=device))
    assert grad_w.shape == W.shape  # the gradient has the shape of W


def test_gradient_tape_errors() -> None:
    x = torch.tensor(1.0)
    with GradientTape() as tape:
        y = 2 * x
    with pytest.raises(ValueError, match="does not require grad"):
        tape.gradient(y, x)


def test_book_computation_graph() -> None:
    graph = ScalarGraph()  # x=2, w=3, b=1, y_true=4
    assert graph.forward() == {"x1": 6.0, "x2": 7.0, "loss_val": 3.0}
    edges = graph.backward_edges()
    assert edges[("loss_val", "x2")] == 1 and edges[("x2", "x1")] == 1
    assert edges[("x2", "b")] == 1 and edges[("x1", "w")] == 2
    assert graph.grad_by_paths("w") == 2.0 and graph.grad_by_paths("b") == 1.0
    assert graph.grad_by_autograd() == {"w": 2.0, "b": 1.0}


def test_review_erratum_values_give_consistent_graph() -> None:
    # The review's own forward values (x=3, w=2, b=3, y_true=8) give x2=9 and loss 1;
    # its edge grad(x1, w) is then x = 3 but its other edges reuse the book's b=1, x1=6.
    review = ScalarGraph(x=3.0, w=2.0, b=3.0, y_true=8.0)
    assert review.forward() == {"x1": 6.0, "x2": 9.0, "loss_val": 1.0}
    assert review.grad_by_paths("w") == review.grad_by_autograd()["w"] == 3.0
    assert ScalarGraph().grad_by_paths("w") == 2.0  # the book's example, not 3


@pytest.mark.parametrize("seed", range(5))
def test_graph_paths_agree_with_autograd_and_finite_differences(seed: int) -> None:
    rng = np.random.default_rng(seed)
    x, w, b, yt = rng.uniform(-3, 3, 4)
    graph = ScalarGraph(x, w, b, yt)
    auto = graph.grad_by_autograd()
    assert graph.grad_by_paths("w") == pytest.approx(auto["w"])
    assert graph.grad_by_paths("b") == pytest.approx(auto["b"])
    fd_w = derivative(lambda w_: abs(yt - (x * w_ + b)), w)
    assert graph.grad_by_paths("w") == pytest.approx(fd_w, rel=1e-6)


def test_sgd_on_a_curve_three_learning_rates() -> None:
    grad = lambda w: 2 * w  # noqa: E731  (loss w**2, minimum at 0)
    good = sgd_path(grad, 5.0, 0.1, 100)
    tiny = sgd_path(grad, 5.0, 1e-4, 100)
    big = sgd_path(grad, 5.0, 1.1, 100)
    assert len(good) == len(tiny) == len(big) == 101
    assert abs(good[-1]) < 1e-6  # converges
    assert 4.9 < tiny[-1] < 5.0  # crawls: moved, but barely
    assert abs(big[-1]) > 1e6 or not math.isfinite(big[-1])  # diverges
    assert all(abs(b) >= abs(a) for a, b in itertools.pairwise(big))


def test_one_sgd_step_lowers_the_loss() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(16, 4, generator=g, dtype=torch.float64)
    target = torch.randn(16, 3, generator=g, dtype=torch.float64)
    W0 = torch.randn(4, 3, generator=g, dtype=torch.float64, requires_grad=True)
    loss0 = ((x @ W0 - target) ** 2).mean()
    (grad,) = torch.autograd.grad(loss0, W0)
    assert grad.shape == W0.shape
    W1 = W0.detach() - 0.01 * grad
    assert float(((x @ W1 - target) ** 2).mean()) < float(loss0.detach())


# --- the tape beside plain autograd (docs/listings.md), and its differences from TF ---


def test_the_listings_tape_and_plain_autograd_snippet_runs_and_agrees(
    capsys: pytest.CaptureFixture[str],
) -> None:
    text = (ROOT / "docs" / "listings.md").read_text(encoding="utf-8")
    block = text.split("### The gradient tape beside plain autograd", 1)[1]
    code = block.split("```python\n", 1)[1].split("```", 1)[0]
    namespace: dict[str, object] = {}
    exec(compile(code, "docs/listings.md", "exec"), namespace)
    first = capsys.readouterr().out.splitlines()[0]
    assert first == "tensor(2.) tensor(2.)"  # dy/dx of 2x + 3, by hand
    x = namespace["x"]
    assert isinstance(x, torch.Tensor)
    w_grad, b_grad = namespace["grad_of_y_wrt_W_and_b"]  # type: ignore[misc]
    torch.testing.assert_close(b_grad, torch.tensor([2.0, 2.0]))  # two rows of x
    column_sums = x.sum(dim=0)  # d(sum(x @ W))/dW[i, j] = sum_k x[k, i], by hand
    torch.testing.assert_close(w_grad, column_sums[:, None].expand(2, 2))


def test_the_tape_records_outside_its_block_and_gives_zeros_where_tf_gives_none() -> None:
    """The two differences from TensorFlow's tape that gradients.py and listings.md state."""
    x, unused = variable(3.0), variable(5.0)
    y = x * x  # computed before the `with`: TF's tape would not have recorded it
    with GradientTape() as tape:
        pass
    grad_x, grad_unused = tape.gradient(y, [x, unused])  # type: ignore[misc]
    assert float(grad_x) == 6.0  # 2x at x = 3
    assert torch.equal(grad_unused, torch.zeros(()))  # TF: None
    with pytest.raises(RuntimeError):  # like a non-persistent tape: one call per target
        tape.gradient(y, x)
