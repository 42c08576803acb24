"""Facts of chapter 2 that need no implementation to check: unscored, outside the suite.

They left the conformance specs (issue 12: only specs that exercise the implementation count
toward a grade). The values are the book's, written out by hand; where the port holds the
same fact (its data-tensor table, ``video_batch_bytes``, ``chain_rule``, ``derivative``,
``ScalarGraph``), it is checked against them.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from conformance.data import load

torch = pytest.importorskip("torch")


@pytest.mark.parametrize(
    ("kind", "shape"),
    [
        ("vector", (100000, 3)),
        ("vector", (500, 20000)),
        ("timeseries", (250, 390, 3)),
        ("timeseries", (1000000, 280, 128)),
        ("image", (128, 256, 256, 1)),
        ("image", (128, 3, 256, 256)),
        ("video", (4, 240, 144, 256, 3)),
    ],
)
def test_data_tensor_ranks_of_section_2_2(kind: str, shape: tuple[int, ...]) -> None:
    from dl_ch2.data_representations import DATA_TENSOR_EXAMPLES

    rank = {"vector": 2, "timeseries": 3, "image": 4, "video": 5}[kind]
    assert len(shape) == rank
    assert any(e.kind == kind and e.shape == shape and e.rank == rank for e in DATA_TENSOR_EXAMPLES)


def test_video_batch_is_405_mib_not_405_mb() -> None:
    # Erratum (book): "405 MB". 60 s at 4 frames/s = 240 frames of 144x256 RGB, 4 clips.
    from dl_ch2.data_representations import video_batch_bytes, video_batch_elements

    assert math.prod((4, 60 * 4, 144, 256, 3)) == 106_168_320 == video_batch_elements()
    assert video_batch_bytes() == 424_673_280 == 106_168_320 * np.dtype(np.float32).itemsize
    assert round(424_673_280 / 2**20) == 405 and round(424_673_280 / 1e6) == 425


def test_five_dimensional_vector_has_five_entries() -> None:
    # Erratum (1st ed.): the array printed has four entries but is called 5-dimensional.
    from dl_ch2.data_representations import vector_example

    v = vector_example()
    assert v.tolist() == [12, 3, 6, 14, 7] and v.ndim == 1


def test_matplotlib_has_imshow_not_imgshow() -> None:
    # Erratum (review): it displays the digit with plt.imgshow; the function is plt.imshow.
    plt = pytest.importorskip("matplotlib.pyplot", reason="matplotlib not installed")
    assert callable(plt.imshow) and not hasattr(plt, "imgshow")


def test_chain_rule_examples_of_section_2_4_4() -> None:
    import dl_ch2

    x = 0.7  # f(g(x)) with g = x**2 + 1, f = sin: cos(g(x)) * 2x
    value, slope = dl_ch2.chain_rule([lambda t: t**2 + 1, math.sin], [lambda t: 2 * t, math.cos], x)
    assert value == math.sin(x**2 + 1)
    assert math.isclose(slope, math.cos(x**2 + 1) * 2 * x, rel_tol=1e-15)
    x = 0.2  # f(g(h(j(x)))) with j = 3x, h = exp
    fns = [lambda t: 3 * t, math.exp, lambda t: t**2 + 1, math.sin]
    ders = [lambda t: 3.0, math.exp, lambda t: 2 * t, math.cos]
    _, slope = dl_ch2.chain_rule(fns, ders, x)
    hx = math.exp(3 * x)
    assert math.isclose(slope, math.cos(hx**2 + 1) * 2 * hx * hx * 3, rel_tol=1e-14)


def test_gradient_is_slope_not_curvature() -> None:
    # Erratum (notebook text): "the gradient ... represents the curvature". On loss(w) = w**2
    # the gradient (slope) at the minimum is 0, while the curvature there is 2.
    import dl_ch2

    assert dl_ch2.derivative(lambda w: w * w, 0.0) == 0.0
    h = 1e-4
    assert abs((h * h - 2 * 0.0 + h * h) / h**2 - 2.0) < 1e-9


def test_computation_graph_forward_values() -> None:
    # x=2, w=3, b=1, y_true=4: x1 = 6, x2 = 7, loss_val = 3 (the book's figure)
    import dl_ch2

    assert dl_ch2.ScalarGraph(2.0, 3.0, 1.0, 4.0).forward() == {
        "x1": 6.0,
        "x2": 7.0,
        "loss_val": 3.0,
    }


@pytest.mark.mnist
def test_mnist_arrays() -> None:
    data = load()
    if data is None:
        pytest.skip("MNIST files not found (run `dl-ch2 data`)")
    (train_images, train_labels), (test_images, test_labels) = data
    assert train_images.shape == (60000, 28, 28) and train_images.dtype == np.uint8
    assert test_images.shape == (10000, 28, 28) and test_labels.shape == (10000,)
    assert train_labels[:3].tolist() == [5, 0, 4] and train_labels[-3:].tolist() == [5, 6, 8]
    assert test_labels[:3].tolist() == [7, 2, 1] and test_labels[-3:].tolist() == [4, 5, 6]
    assert int(train_labels[4]) == 9
