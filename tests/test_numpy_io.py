"""NumPy in, NumPy out where the book does it (§2.1, §2.5.3-2.5.4).

The notebook passes the NumPy arrays of ``mnist.load_data()`` and its preprocessing straight
to ``fit``, ``evaluate`` and ``predict``, and calls ``.numpy()`` on what the model returns.
Each test compares with the same call on tensors made by hand (``torch.from_numpy``), or
with hand-computed values.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dl_ch2 import build_first_example_model, build_naive_model, evaluate, fit, predict


def _arrays(n: int = 300, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """MNIST-like: float32 images in [0, 1] of shape (n, 784), uint8 labels, as preprocess."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n).astype(np.uint8)
    prototypes = rng.random((10, 784))
    images = np.clip(prototypes[labels] + 0.5 * rng.random((n, 784)), 0, 1).astype("float32")
    return images, labels


def test_fit_on_numpy_arrays_trains_as_on_tensors() -> None:
    images, labels = _arrays()
    on_numpy = build_naive_model(generator=torch.Generator().manual_seed(0))
    on_tensors = build_naive_model(generator=torch.Generator().manual_seed(0))
    h_np = fit(on_numpy, images, labels, epochs=2, batch_size=64, print_fn=None)
    h_t = fit(
        on_tensors,
        torch.from_numpy(images),
        torch.from_numpy(labels.astype(np.int64)),
        epochs=2,
        batch_size=64,
        print_fn=None,
    )
    assert h_np.batch_losses == h_t.batch_losses
    for a, b in zip(on_numpy.weights, on_tensors.weights, strict=True):
        assert torch.equal(a, b)
    assert np.all(images >= 0) and images.dtype == np.float32  # the caller's arrays untouched


def test_evaluate_on_numpy_arrays_is_the_hand_computed_accuracy() -> None:
    images, labels = _arrays(200)
    model = build_naive_model(generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        probs = model(torch.from_numpy(images)).numpy()
    expected = float((probs.argmax(axis=1) == labels).mean())
    assert evaluate(model, images, labels) == expected
    assert evaluate(model, images, labels, batch_size=64) == expected


def test_predict_takes_numpy_and_its_result_converts_with_numpy() -> None:
    images, _ = _arrays(10)
    model = build_first_example_model(generator=torch.Generator().manual_seed(0))
    predictions = predict(model, images[0:10])
    as_array = predictions.numpy()  # the notebook's `predictions[0]` / `.argmax()` work on it
    assert as_array.shape == (10, 10) and as_array.dtype == np.float32
    w1, b1 = model[0].weight.detach().double().numpy(), model[0].bias.detach().double().numpy()
    w2, b2 = model[2].weight.detach().double().numpy(), model[2].bias.detach().double().numpy()
    logits = np.maximum(images.astype(np.float64) @ w1.T + b1, 0) @ w2.T + b2
    by_hand = np.exp(logits - logits.max(1, keepdims=True))
    by_hand /= by_hand.sum(1, keepdims=True)
    np.testing.assert_allclose(as_array, by_hand, rtol=1e-4, atol=1e-6)
    assert not predictions.requires_grad


def test_the_models_output_under_inference_mode_converts_with_numpy() -> None:
    """§2.5.4's ``predictions = model(test_images); predictions.numpy()``, the port's way."""
    images, _ = _arrays(5)
    model = build_naive_model(generator=torch.Generator().manual_seed(0))
    with pytest.raises(RuntimeError, match="requires grad"):
        model(torch.from_numpy(images)).numpy()  # what a plain call gives: autograd records
    with torch.inference_mode():
        predictions = model(torch.from_numpy(images))
    assert predictions.numpy().shape == (5, 10)


def test_bad_numpy_inputs_are_named() -> None:
    images, labels = _arrays(8)
    model = build_naive_model(generator=torch.Generator().manual_seed(0))
    raw = (images * 255).astype(np.uint8)  # the arrays before preprocess
    with pytest.raises(TypeError, match=r"images have dtype torch.uint8.*preprocess"):
        fit(model, raw, labels, epochs=1, print_fn=None)
    with pytest.raises(TypeError, match=r"labels: a NumPy array of dtype object"):
        evaluate(model, images, np.array([object()] * 8))
    with pytest.raises(TypeError, match="labels must hold integer class indices"):
        evaluate(model, images, labels.astype(np.float32))
    with pytest.raises(ValueError, match=r"labels must have shape \(N,\) = \(8,\)"):
        fit(model, images, labels[:7], epochs=1, print_fn=None)


def test_read_only_arrays_are_copied_not_written() -> None:
    images, labels = _arrays(64)
    images.setflags(write=False)
    labels.setflags(write=False)
    model = build_naive_model(generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        expected = float(
            (model(torch.from_numpy(images.copy())).numpy().argmax(1) == labels).mean()
        )
    assert evaluate(model, images, labels) == expected
    fit(model, images, labels, epochs=1, print_fn=None)
