"""§2.3 edges found by mutation testing (conformance/MUTATION.md): dtypes the naive ops and
rotate keep (integer points rotate in float64; float32 kept: capability
``dtype_preservation``), and stretch to y's own shape."""

from __future__ import annotations

import math

import numpy as np
import pytest

from conformance.harness import Impl, check_close

pytestmark = pytest.mark.section("2.3")

NAIVE_CASES = [
    ("naive_relu", (4, 3), None),
    ("naive_add", (4, 3), (4, 3)),
    ("naive_add_matrix_and_vector", (4, 3), (3,)),
    ("naive_vector_dot", (5,), (5,)),
    ("naive_matrix_vector_dot", (4, 3), (3,)),
    ("naive_matrix_vector_dot_via_vector_dot", (4, 3), (3,)),
    ("naive_matrix_dot", (4, 3), (3, 2)),
]


def _vectorized(verb: str, x: np.ndarray, y: np.ndarray | None) -> np.ndarray:
    if verb == "naive_relu":
        return np.maximum(x, 0)
    assert y is not None
    if verb.startswith("naive_add"):
        return x + y
    return np.asarray(x @ y)


@pytest.mark.requires("naive_ops")
@pytest.mark.requires("dtype_preservation")
@pytest.mark.parametrize(("verb", "xs", "ys"), NAIVE_CASES, ids=[c[0] for c in NAIVE_CASES])
def test_naive_ops_keep_float32_in_a_float64_grade(
    impl: Impl, verb: str, xs: tuple[int, ...], ys: tuple[int, ...] | None
) -> None:
    # float32 operands give a float32 result, whatever the grade's dtype: an accumulator or
    # output buffer created in the default dtype (float64) shows up here. The book's loops
    # do just that (np.zeros buffers, a 0. accumulator): capability dtype_preservation.
    rng = np.random.default_rng(31)
    x = rng.uniform(-1, 1, xs).astype(np.float32)
    y = None if ys is None else rng.uniform(-1, 1, ys).astype(np.float32)
    args = [impl.arr(x, "float32")] + ([] if y is None else [impl.arr(y, "float32")])
    out = impl.run(verb, *args)
    expected = _vectorized(verb, x.astype(np.float64), None if y is None else y.astype(np.float64))
    check_close(
        impl,
        out,
        expected.astype(np.float32),
        what=f"{verb} of float32 operands",
        expect_dtype="float32",
        rtol=1e-5,
        atol=1e-6,
    )


def test_reshape_infers_a_minus_one_dimension(impl: Impl) -> None:
    # NumPy's (and torch's, TF's, JAX's) reshape infers one -1 dimension from the size.
    x = np.arange(12.0).reshape(3, 4)
    for shape, want in [((-1,), (12,)), ((2, -1), (2, 6)), ((-1, 1), (12, 1))]:
        out = impl.run("reshape", impl.arr(x), shape)
        check_close(impl, out, x.reshape(want), what=f"reshape of a (3, 4) array to {shape}")


@pytest.mark.parametrize(
    "scalar_first", [True, False], ids=["scalar_dot_vector", "vector_dot_scalar"]
)
def test_dot_with_a_scalar_operand_multiplies(impl: Impl, scalar_first: bool) -> None:
    # np.dot's rule: a 0-d operand multiplies element-wise (both operand orders)
    s, v = np.array(2.5), np.array([1.0, -2.0, 4.0])
    args = (impl.arr(s), impl.arr(v)) if scalar_first else (impl.arr(v), impl.arr(s))
    out = impl.run("dot", *args)
    check_close(impl, out, np.array([2.5, -5.0, 10.0]), what="dot of a scalar and a vector")


def test_stretch_to_its_own_shape_gives_y(impl: Impl) -> None:
    # no axis to add: stretch(y, y.shape) is y's values (zero repetitions of the book's loop)
    y = np.array([[1.0, -2.0, 3.0], [0.5, 0.0, 4.0]])
    check_close(impl, impl.run("stretch", impl.arr(y), (2, 3)), y, what="stretch (2, 3) -> (2, 3)")


@pytest.mark.requires("dtype_preservation")
def test_rotate_keeps_float32_points_in_float32(impl: Impl) -> None:
    # the rotation matrix follows the points' dtype (a float64 matrix would promote them;
    # the chapter does not say: capability dtype_preservation)
    pts = np.array([[1.0, 0.0], [0.5, 1.0]], dtype=np.float32)
    out = impl.run("rotate", impl.arr(pts, "float32"), math.pi / 2)
    check_close(
        impl,
        out,
        np.array([[0.0, 1.0], [-1.0, 0.5]]),
        what="float32 points rotated by 90 degrees",
        expect_dtype="float32",
        rtol=1e-6,
        atol=1e-6,
    )


def test_rotate_gives_integer_points_in_float64(impl: Impl) -> None:
    # by 30 degrees: a rotation matrix in the points' integer dtype would truncate cos and
    # sin to 0 (at 90 degrees it would happen to be exact)
    c, s = math.cos(math.pi / 6), math.sin(math.pi / 6)
    pts = np.array([[1, 0], [2, 3]], dtype=np.int64)
    out = impl.run("rotate", impl.arr(pts, "int64"), math.pi / 6)
    check_close(
        impl,
        out,
        np.array([[c, s], [2 * c - 3 * s, 2 * s + 3 * c]]),
        what="integer points rotated by 30 degrees",
        expect_dtype="float64",
    )
