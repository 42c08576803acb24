"""§2.2 Data representations: ranks, shapes, slicing, batches, real-world data tensors."""

from __future__ import annotations

import math

import numpy as np
import pytest

from conformance.harness import Impl, check, check_equal

pytestmark = pytest.mark.section("2.2")

MATRIX = [[5, 78, 2, 34, 0], [6, 79, 3, 35, 1], [7, 80, 4, 36, 2]]


@pytest.mark.parametrize(
    ("name", "value", "ndim", "shape"),
    [
        ("scalar", 12, 0, ()),
        (
            "vector of five entries (a 5-dimensional vector, a rank-1 tensor)",
            [12, 3, 6, 14, 7],
            1,
            (5,),
        ),
        ("matrix", MATRIX, 2, (3, 5)),
        ("rank-3 tensor", [MATRIX, MATRIX, MATRIX], 3, (3, 3, 5)),
    ],
    ids=["scalar", "vector", "matrix", "rank3"],
)
def test_rank_and_shape(
    impl: Impl, name: str, value: object, ndim: int, shape: tuple[int, ...]
) -> None:
    out = impl.to_np(impl.arr(np.array(value, dtype=np.int64), "int64"), name)
    check_equal(impl, out.ndim, ndim, what=f"ndim of the {name}")
    check_equal(impl, out.shape, shape, what=f"shape of the {name}")
    check_equal(impl, str(out.dtype), "int64", what=f"dtype of the {name}")
    check_equal(impl, out, np.array(value), what=f"values of the {name}")


@pytest.mark.erratum
def test_five_dimensional_vector_has_five_entries(impl: Impl) -> None:
    # Erratum (1st ed.): the array printed has four entries but is called 5-dimensional.
    out = impl.to_np(impl.arr(np.array([12, 3, 6, 14, 7]), "int64"))
    check(impl, out.shape == (5,) and out.ndim == 1, "a 5-dimensional vector has 5 entries, rank 1")


def _images(n: int = 120) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (n, 28, 28)).astype(np.uint8)


def test_slicing_three_equivalent_ways(impl: Impl) -> None:
    images = _images()
    t = impl.arr(images, "uint8")
    forms = {
        "[10:100]": (slice(10, 100),),
        "[10:100, :, :]": (slice(10, 100), slice(None), slice(None)),
        "[10:100, 0:28, 0:28]": (slice(10, 100), slice(0, 28), slice(0, 28)),
    }
    for label, index in forms.items():
        out = impl.run("getitem", t, index)
        check_equal(impl, out.shape, (90, 28, 28), what=f"shape of train_images{label}")
        check_equal(impl, out, images[10:100], what=f"values of train_images{label}")


def test_bottom_right_and_centred_crops(impl: Impl) -> None:
    images = _images()
    t = impl.arr(images, "uint8")
    br = impl.run("getitem", t, (slice(None), slice(14, None), slice(14, None)))
    check_equal(impl, br.shape, (120, 14, 14), what="bottom-right 14x14 crop shape")
    check_equal(impl, br, images[:, 14:, 14:], what="bottom-right crop values")
    cc = impl.run("getitem", t, (slice(None), slice(7, -7), slice(7, -7)))
    check_equal(impl, cc.shape, (120, 14, 14), what="centred crop (negative indices) shape")
    check_equal(impl, cc, images[:, 7:21, 7:21], what="centred crop values")


@pytest.mark.parametrize("n", [0, 1, 3])
def test_batch_n(impl: Impl, n: int) -> None:
    images = _images(500)
    out = impl.run("getitem", impl.arr(images, "uint8"), (slice(128 * n, 128 * (n + 1)),))
    expected_len = min(128, 500 - 128 * n)
    check_equal(impl, out.shape, (expected_len, 28, 28), what=f"batch {n} shape")
    check_equal(impl, out, images[128 * n : 128 * (n + 1)], what=f"batch {n} values")


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
def test_data_tensor_ranks(kind: str, shape: tuple[int, ...]) -> None:
    # Facts of the chapter, checked without the implementation (nothing to allocate).
    assert len(shape) == {"vector": 2, "timeseries": 3, "image": 4, "video": 5}[kind]


@pytest.mark.erratum
def test_video_batch_size() -> None:
    # 60 s at 4 frames/s = 240 frames of 144x256 RGB, 4 clips.
    elements = math.prod((4, 60 * 4, 144, 256, 3))
    assert elements == 106_168_320
    nbytes = elements * np.dtype(np.float32).itemsize
    assert nbytes == 424_673_280
    # Erratum: the book's "405 MB" is 405 MiB (2**20 bytes); it is 425 MB.
    assert round(nbytes / 2**20) == 405 and round(nbytes / 1e6) == 425


@pytest.mark.erratum
def test_matplotlib_has_imshow_not_imgshow() -> None:
    # Erratum (review): it displays the digit with plt.imgshow; the function is plt.imshow.
    plt = pytest.importorskip("matplotlib.pyplot", reason="matplotlib not installed")
    assert callable(plt.imshow) and not hasattr(plt, "imgshow")
