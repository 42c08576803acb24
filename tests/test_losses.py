"""§2.5.2: sparse_categorical_crossentropy with TF 2.6 eager semantics, against NumPy float64."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.testing import assert_close

from dl_ch2 import sparse_categorical_crossentropy as scce
from dl_ch2.losses import EPSILON


def np_reference(labels: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Loss per sample and d(mean loss)/d(probs), derived by hand."""
    c = np.clip(probs, EPSILON, 1 - EPSILON)
    s = c.sum(axis=1, keepdims=True)
    n = len(labels)
    loss = -np.log(c[np.arange(n), labels]) + np.log(s[:, 0])
    onehot = np.zeros_like(probs)
    onehot[np.arange(n), labels] = 1
    dz = c / s - onehot  # gradient w.r.t. the logs
    inside = (probs >= EPSILON) & (probs <= 1 - EPSILON)
    grad = np.where(inside, dz / c, 0.0) / n
    return loss, grad


def test_matches_reference_when_clipping_acts(device: torch.device) -> None:
    probs = np.array(
        [
            [1.0, 0.0, 0.0],  # clipped both ends: row sum changes, renormalised
            [0.2, 0.3, 0.5],  # untouched
            [1e-9, 0.5, 0.5 - 1e-9],  # clipped low only
            [0.0, 1.0, 0.0],  # label points at a clipped-to-eps entry
        ]
    )
    labels = np.array([0, 2, 0, 0])
    p = torch.tensor(probs, dtype=torch.float64, device=device, requires_grad=True)
    y = torch.tensor(labels, device=device)
    loss = scce(y, p)
    ref_loss, ref_grad = np_reference(labels, probs)
    assert_close(loss.detach().cpu(), torch.from_numpy(ref_loss), rtol=1e-12, atol=1e-12)
    (g,) = torch.autograd.grad(loss.mean(), p)
    assert_close(g.cpu(), torch.from_numpy(ref_grad), rtol=1e-10, atol=1e-12)
    # zero gradient exactly where clipping acted
    clipped = (probs < EPSILON) | (probs > 1 - EPSILON)
    assert (g.cpu().numpy()[clipped] == 0).all()
    assert (g.cpu().numpy()[~clipped] != 0).all()


def test_renormalisation_differs_from_plain_negative_log() -> None:
    probs = torch.tensor([[1.0, 0.0, 0.0]], dtype=torch.float64)
    loss = float(scce(torch.tensor([0]), probs))
    c = np.clip([1.0, 0.0, 0.0], EPSILON, 1 - EPSILON)
    plain = -np.log(c[0])  # what "clip then -log p_y" would give, ~1e-7
    renorm = -np.log(c[0] / c.sum())
    assert loss == pytest.approx(renorm, rel=1e-9)
    assert abs(loss - plain) > 1e-8


def test_unclipped_rows_equal_negative_log_probability(dtype: torch.dtype) -> None:
    g = torch.Generator().manual_seed(0)
    probs = torch.softmax(torch.randn(64, 10, generator=g, dtype=dtype), dim=-1)
    labels = torch.randint(0, 10, (64,), generator=g)
    expected = -torch.log(probs[torch.arange(64), labels])
    assert_close(scce(labels, probs), expected)


def test_from_logits_is_plain_softmax_cross_entropy() -> None:
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(8, 10, generator=g, dtype=torch.float64) * 30  # saturating
    labels = torch.randint(0, 10, (8,), generator=g)
    out = scce(labels, logits, from_logits=True)
    lse = np.log(
        np.exp(logits.numpy() - logits.numpy().max(1, keepdims=True)).sum(1)
    ) + logits.numpy().max(1)
    ref = lse - logits.numpy()[np.arange(8), labels.numpy()]
    np.testing.assert_allclose(out.numpy(), ref, rtol=1e-12, atol=1e-12)


def test_bad_input() -> None:
    p = torch.full((4, 3), 1 / 3)
    with pytest.raises(ValueError, match=r"\(4,\).*\(5,\)"):
        scce(torch.zeros(5, dtype=torch.long), p)
    with pytest.raises(TypeError, match="integer"):
        scce(torch.zeros(4), p)
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        scce(torch.tensor([0, 1, 2, 3]), p)
    with pytest.raises(ValueError, match=r"\(batch, classes\)"):
        scce(torch.zeros(4, dtype=torch.long), p.ravel())
