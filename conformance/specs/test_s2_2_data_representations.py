"""§2.2 Data representations: ranks and shapes, slicing, crops, batches.

The real-world data tensors and the video batch's size are book facts needing no
implementation: tests/test_book_facts.py checks them, unscored.
"""

from __future__ import annotations

import numpy as np
import pytest

from conformance.harness import Impl, check_equal

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
def test_reshape_builds_the_chapter_tensors_with_their_rank_and_shape(
    impl: Impl, name: str, value: object, ndim: int, shape: tuple[int, ...]
) -> None:
    expected = np.array(value, dtype=np.int64)
    flat = impl.arr(expected.reshape(1, -1), "int64")  # one row: a reshape must change it
    out = impl.run("reshape", flat, shape)
    check_equal(impl, out.ndim, ndim, what=f"ndim of the {name}")
    check_equal(impl, out.shape, shape, what=f"shape of the {name}")
    check_equal(impl, str(out.dtype), "int64", what=f"dtype of the {name}")
    check_equal(impl, out, expected, what=f"values of the {name}")


@pytest.mark.erratum
def test_mnist_training_images_are_60000_matrices_of_28_by_28(impl: Impl) -> None:
    # Erratum (1st edition, §2.2.5): "an array of 60,000 matrices of 28 × 8 integers";
    # each MNIST image is a 28 × 28 matrix of uint8.
    images = np.zeros((60000, 28, 28), dtype=np.uint8)
    images[4, 10:18, 14] = 255  # a stroke: one image among 60,000
    t = impl.arr(images, "uint8", "the (60000, 28, 28) uint8 zeros with images[4, 10:18, 14] = 255")
    check_equal(impl, impl.run("reshape", t, (60000, 28, 28)).shape, (60000, 28, 28), what="shape")
    digit = impl.run("getitem", t, (4,))
    check_equal(impl, digit.shape, (28, 28), what="train_images[4].shape: a 28 x 28 matrix")
    check_equal(impl, str(digit.dtype), "uint8", what="train_images[4].dtype")
    check_equal(impl, digit, images[4], what="train_images[4]")


def _source(n: int) -> str:
    return f"np.random.default_rng(0).integers(0, 256, ({n}, 28, 28))"


def _images(n: int = 120) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (n, 28, 28)).astype(np.uint8)


def test_slicing_three_equivalent_ways(impl: Impl) -> None:
    images = _images()
    t = impl.arr(images, "uint8", _source(len(images)))
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
    t = impl.arr(images, "uint8", _source(len(images)))
    br = impl.run("getitem", t, (slice(None), slice(14, None), slice(14, None)))
    check_equal(impl, br.shape, (120, 14, 14), what="bottom-right 14x14 crop shape")
    check_equal(impl, br, images[:, 14:, 14:], what="bottom-right crop values")
    cc = impl.run("getitem", t, (slice(None), slice(7, -7), slice(7, -7)))
    check_equal(impl, cc.shape, (120, 14, 14), what="centred crop (negative indices) shape")
    check_equal(impl, cc, images[:, 7:21, 7:21], what="centred crop values")


@pytest.mark.parametrize("n", [0, 1, 3])
def test_batch_n(impl: Impl, n: int) -> None:
    images = _images(500)
    out = impl.run(
        "getitem", impl.arr(images, "uint8", _source(500)), (slice(128 * n, 128 * (n + 1)),)
    )
    expected_len = min(128, 500 - 128 * n)
    check_equal(impl, out.shape, (expected_len, 28, 28), what=f"batch {n} shape")
    check_equal(impl, out, images[128 * n : 128 * (n + 1)], what=f"batch {n} values")
