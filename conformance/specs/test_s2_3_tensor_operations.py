"""§2.3 Tensor operations: element-wise ops, broadcasting, dot, reshape, geometry."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from conformance.golden import load_case
from conformance.harness import Impl, check, check_close, check_equal, loop_dtype

pytestmark = pytest.mark.section("2.3")


@pytest.mark.parametrize("verb", ["relu", "add"])
def test_elementwise_golden(impl: Impl, verb: str) -> None:
    c = load_case(verb)
    args = [impl.arr(c["x"])] + ([impl.arr(c["y"])] if verb == "add" else [])
    check_close(impl, impl.run(verb, *args), c["out"], what=f"{verb} on golden case {verb!r}")


def test_relu_of_zero_negative_zero_and_extremes_keeps_dtype_and_input(impl: Impl) -> None:
    x = np.array([[-1e30, -1.0, -0.0, 0.0, 1e-30, 2.5, 1e30]])
    t = impl.arr(x)
    out = impl.run("relu", t)
    expected = np.array([[0.0, 0.0, 0.0, 0.0, 1e-30, 2.5, 1e30]]).astype(impl.dtype)
    check_close(impl, out, expected, what="relu at the edges", rtol=0, atol=0)
    check_equal(
        impl, impl.to_np(t), x.astype(impl.dtype), what="relu must leave its input untouched"
    )


@pytest.mark.parametrize("verb", ["add", "maximum"])
def test_elementwise_op_in_both_operand_orders_leaves_inputs(impl: Impl, verb: str) -> None:
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(4, 3)), rng.normal(size=(3,))
    y[1] = x[2, 1]  # a tie for maximum
    tx, ty = impl.arr(x), impl.arr(y)
    expected = (np.add if verb == "add" else np.maximum)(x, y).astype(impl.dtype)
    check_close(impl, impl.run(verb, tx, ty), expected, what=f"{verb}(x (4, 3), y (3,))")
    check_close(impl, impl.run(verb, ty, tx), expected, what=f"{verb}(y (3,), x (4, 3))")
    check_equal(impl, impl.to_np(tx), x.astype(impl.dtype), what=f"{verb} must not change x")
    check_equal(impl, impl.to_np(ty), y.astype(impl.dtype), what=f"{verb} must not change y")


@pytest.mark.parametrize("verb", ["add", "maximum"])
def test_elementwise_op_rejects_shapes_that_do_not_broadcast(impl: Impl, verb: str) -> None:
    impl.run(verb, impl.arr(np.ones((3, 4))), impl.arr(np.ones(4)))
    impl.rejects(verb, impl.arr(np.ones((3, 4))), impl.arr(np.ones(3)))


@pytest.mark.parametrize(("axis", "shape"), [(0, (1, 2, 3)), (1, (2, 1, 3)), (-1, (2, 3, 1))])
def test_expand_dims_adds_an_axis_of_size_1_where_asked(
    impl: Impl, axis: int, shape: tuple[int, ...]
) -> None:
    x = np.arange(6.0).reshape(2, 3)
    out = impl.run("expand_dims", impl.arr(x), axis)
    check_close(impl, out, x.reshape(shape), what=f"expand_dims(x, {axis})", rtol=0, atol=0)


@pytest.mark.parametrize("case", ["broadcast_add", "broadcast_add_square"])
def test_broadcast_add_golden(impl: Impl, case: str) -> None:
    c = load_case(case)
    out = impl.run("add", impl.arr(c["x"]), impl.arr(c["y"]))
    check_close(impl, out, c["out"], what=f"add with broadcasting, case {case!r}")


def test_broadcasting_equals_explicit_expand_and_repeat(impl: Impl) -> None:
    c = load_case("broadcast_add")
    y = impl.arr(c["y"])
    y1 = impl.call("expand_dims", y, 0)
    check_equal(impl, impl.to_np(y1).shape, (1, 10), what="expand_dims(y, 0) shape")
    big = impl.call("getitem", y1, (np.zeros(32, dtype=np.int64),))  # 32 copies of the row
    check_equal(impl, impl.to_np(big).shape, (32, 10), what="y repeated 32 times")
    explicit = impl.run("add", impl.arr(c["x"]), big)
    implicit = impl.run("add", impl.arr(c["x"]), y)
    check_close(impl, implicit, explicit, what="x + y vs x + repeated y", rtol=0, atol=0)


def test_stretch_repeats_the_vector_into_32_rows_and_adding_it_equals_broadcasting(
    impl: Impl,
) -> None:
    c = load_case("broadcast_add")
    ty = impl.arr(c["y"])
    big = impl.run("stretch", ty, (32, 10))
    check_close(
        impl,
        big,
        np.stack([c["y"]] * 32).astype(impl.dtype),
        what="stretch(y, (32, 10))",
        rtol=0,
        atol=0,
    )
    check_equal(impl, impl.to_np(ty), c["y"].astype(impl.dtype), what="stretch must not change y")
    out = impl.run("add", impl.arr(c["x"]), impl.arr(big))
    check_close(impl, out, c["out"], what="x + stretch(y, (32, 10)) vs the broadcast sum")


def test_stretch_to_a_rank_4_target_repeats_along_every_new_axis(impl: Impl) -> None:
    y = np.arange(12.0).reshape(3, 4) - 5.5
    out = impl.run("stretch", impl.arr(y), (2, 5, 3, 4))
    check_close(
        impl,
        out,
        np.broadcast_to(y, (2, 5, 3, 4)),
        what="stretch (3, 4) -> (2, 5, 3, 4)",
        rtol=0,
        atol=0,
    )


def test_stretch_rejects_a_target_whose_trailing_axes_differ(impl: Impl) -> None:
    impl.run("stretch", impl.arr(np.ones(10)), (32, 10))
    impl.rejects("stretch", impl.arr(np.ones(10)), (32, 9))


def test_maximum_broadcasts_64_3_32_10_with_32_10(impl: Impl) -> None:
    rng = np.random.default_rng(1)
    x = rng.random((64, 3, 32, 10)).astype(impl.dtype)
    y = rng.random((32, 10)).astype(impl.dtype)
    out = impl.run("maximum", impl.arr(x), impl.arr(y))
    check_equal(impl, out.shape, (64, 3, 32, 10), what="maximum output shape")
    check_close(impl, out, np.maximum(x, y), what="maximum values", rtol=0, atol=0)


@pytest.mark.parametrize(
    "case",
    [
        "dot_vector",
        "dot_matrix_vector",
        "dot_matrix_matrix",
        "dot_square",
        "dot_rank4_vector",
        "dot_rank4_matrix",
    ],
)
def test_dot_golden(impl: Impl, case: str) -> None:
    c = load_case(case)
    out = impl.run("dot", impl.arr(c["x"]), impl.arr(c["y"]))
    check_close(impl, out, c["out"], what=f"dot, case {case!r} ({c.meta['description']})")


def test_dot_shape_rules(impl: Impl) -> None:
    a, b, cc, d, e = 2, 3, 4, 5, 6
    x = impl.arr(np.ones((a, b, cc, d)))
    check_equal(
        impl,
        impl.run("dot", x, impl.arr(np.ones(d))).shape,
        (a, b, cc),
        what="(a, b, c, d) . (d,) shape",
    )
    check_equal(
        impl,
        impl.run("dot", x, impl.arr(np.ones((d, e)))).shape,
        (a, b, cc, e),
        what="(a, b, c, d) . (d, e) shape",
    )


def test_dot_is_not_symmetric(impl: Impl) -> None:
    c = load_case("dot_square")
    xy = impl.run("dot", impl.arr(c["x"]), impl.arr(c["y"]))
    yx = impl.run("dot", impl.arr(c["y"]), impl.arr(c["x"]))
    check_close(impl, yx, c["out_swapped"], what="dot(y, x)")
    check(impl, not np.allclose(xy, yx), "dot(x, y) must differ from dot(y, x) here")


@pytest.mark.parametrize(("xs", "ys"), [((3, 4), (5, 2)), ((4,), (5,)), ((2, 3, 4), (5,))])
def test_dot_rejects_incompatible_shapes(
    impl: Impl, xs: tuple[int, ...], ys: tuple[int, ...]
) -> None:
    good = (ys[0], *ys[1:]) if len(ys) == 1 else (xs[-1], ys[-1])
    out = impl.run(
        "dot", impl.arr(np.ones(xs)), impl.arr(np.ones((xs[-1],) if len(ys) == 1 else good))
    )
    check_equal(
        impl,
        out.shape,
        np.dot(np.ones(xs), np.ones((xs[-1],) if len(ys) == 1 else good)).shape,
        what="dot of compatible shapes",
    )
    impl.rejects("dot", impl.arr(np.ones(xs)), impl.arr(np.ones(ys)))


def test_dot_in_float64_keeps_what_float32_would_round_away(impl: Impl) -> None:
    if impl.dtype != "float64":
        pytest.skip("float64 grades only")
    x = np.array([[1e8, 1.0, -1e8], [0.1, 0.2, 0.3]])
    out = impl.run("dot", impl.arr(x), impl.arr(np.array([1.0, 1.0, 1.0])))
    # in float32, 1e8 + 1 rounds to 1e8 and the first entry becomes 0
    check_close(
        impl, out, np.array([1.0, 0.6000000000000001]), what="dot in float64", rtol=1e-12, atol=0
    )


@pytest.mark.requires("naive_ops")
@pytest.mark.parametrize(
    ("verb", "xs", "ys", "ref"),
    [
        ("naive_relu", (20, 10), None, lambda x, y: np.maximum(x, 0)),
        ("naive_add", (20, 10), (20, 10), lambda x, y: x + y),
        ("naive_add_matrix_and_vector", (20, 10), (10,), lambda x, y: x + y),
        ("naive_vector_dot", (10,), (10,), lambda x, y: np.asarray(np.dot(x, y))),
        ("naive_matrix_vector_dot", (6, 10), (10,), lambda x, y: x @ y),
        ("naive_matrix_vector_dot_via_vector_dot", (6, 10), (10,), lambda x, y: x @ y),
        ("naive_matrix_dot", (6, 10), (10, 4), lambda x, y: x @ y),
    ],
)
def test_naive_ops_equal_vectorized_and_leave_inputs(impl: Impl, verb: str, xs, ys, ref) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(2)
    x = rng.uniform(-1, 1, xs).astype(impl.dtype)
    y = rng.uniform(-1, 1, ys).astype(impl.dtype) if ys else None
    # the snippet redraws them: two short lines, not 200 literals
    draw = f"np.random.default_rng(2).uniform(-1, 1, {xs})"
    then = f"(_g := np.random.default_rng(2), _g.uniform(-1, 1, {xs}), _g.uniform(-1, 1, {ys}))[-1]"
    tx = impl.arr(x, source=draw)
    ty = impl.arr(y, source=then) if y is not None else None
    out = impl.run(verb, *([tx] if ty is None else [tx, ty]))
    check_close(
        impl,
        out,
        ref(x.astype(np.float64), None if y is None else y.astype(np.float64)),
        what=f"{verb} vs vectorized",
        expect_dtype=loop_dtype(impl, out),
    )
    check_equal(impl, impl.to_np(tx), x, what=f"{verb} must not mutate x")
    if ty is not None:
        check_equal(impl, impl.to_np(ty), y, what=f"{verb} must not mutate y")


@pytest.mark.requires("naive_ops")
@pytest.mark.parametrize(
    ("verb", "xs", "ys", "good"),
    [
        ("naive_add", (3, 4), (4, 3), (3, 4)),
        ("naive_add", (3, 4), (4,), (3, 4)),
        ("naive_matrix_dot", (3, 4), (3, 4), (4, 3)),
        ("naive_vector_dot", (3,), (4,), (3,)),
        ("naive_add_matrix_and_vector", (3, 4), (3,), (4,)),
        ("naive_add_matrix_and_vector", (3, 4), (3, 4), (4,)),
        ("naive_matrix_vector_dot", (3, 4), (3,), (4,)),
        ("naive_matrix_vector_dot_via_vector_dot", (3, 4), (3,), (4,)),
        ("naive_relu", (2, 3, 4), None, None),
    ],
)
def test_naive_ops_reject_bad_shapes(impl: Impl, verb: str, xs, ys, good) -> None:  # type: ignore[no-untyped-def]
    if ys is None:  # the book's loops take a rank-2 x
        impl.run(verb, impl.arr(np.ones((3, 4))))
        impl.rejects(verb, impl.arr(np.ones(xs)))
        return
    impl.run(verb, impl.arr(np.ones(xs)), impl.arr(np.ones(good)))
    impl.rejects(verb, impl.arr(np.ones(xs)), impl.arr(np.ones(ys)))


def test_reshape_exact_values(impl: Impl) -> None:
    x = impl.arr(np.array([[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]]))
    col = impl.call("reshape", x, (6, 1))
    check_close(
        impl, impl.to_np(col), np.arange(6.0).reshape(6, 1), what="(3, 2) -> (6, 1)", rtol=0, atol=0
    )
    back = impl.run("reshape", col, (2, 3))
    check_close(
        impl,
        back,
        np.array([[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]),
        what="(6, 1) -> (2, 3)",
        rtol=0,
        atol=0,
    )


def test_transpose_300_by_20(impl: Impl) -> None:
    out = impl.run("transpose", impl.arr(np.zeros((300, 20))))
    check_equal(impl, out.shape, (20, 300), what="transpose of (300, 20)")


@pytest.mark.erratum
def test_broadcast_repeats_y_once_per_row_of_x_32_times_not_10(impl: Impl) -> None:
    # Erratum (1st edition, §2.3.2): X (32, 10) + y (10,) pictures y "repeated 10 times";
    # it is repeated along the new axis once per row of X: 32 times (10 is y's length).
    rng = np.random.default_rng(11)
    # Through the book's own code (add, naive_add_matrix_and_vector), not the stretch verb,
    # an extension the book never writes as a function.
    x, y = rng.normal(size=(32, 10)), rng.normal(size=(10,))
    out = impl.run("add", impl.arr(x), impl.arr(y))
    check_equal(impl, out.shape, (32, 10), what="add(X (32, 10), y (10,)).shape")
    check_close(impl, out, x + y[None, :], what="X (32, 10) + y (10,): all 32 rows get y")


@pytest.mark.requires("naive_ops")
@pytest.mark.erratum
@pytest.mark.parametrize(
    "verb", ["naive_matrix_vector_dot", "naive_matrix_vector_dot_via_vector_dot"]
)
def test_dot_naive_matrix_vector_has_one_entry_per_row_of_x_not_the_shape_of_y(
    impl: Impl, verb: str
) -> None:
    # Erratum (1st edition, §2.3.3): the result is described as zeros "with the same shape
    # as y"; it is np.zeros(x.shape[0]): one entry per row of x. x (4, 3), y (3,) -> (4,).
    rng = np.random.default_rng(12)
    x, y = rng.uniform(-1, 1, (4, 3)), rng.uniform(-1, 1, (3,))
    tx, ty = impl.arr(x), impl.arr(y)
    out = impl.run(verb, tx, ty)
    check_equal(impl, out.shape, (4,), what=f"{verb}(x (4, 3), y (3,)).shape")
    check_close(
        impl, out, x @ y, what=f"{verb}(x (4, 3), y (3,))", expect_dtype=loop_dtype(impl, out)
    )
    vectorized = impl.run("dot", tx, ty)  # the operation the loops spell out
    check_close(
        impl, out, vectorized, what=f"{verb}(x, y) vs dot(x, y)", expect_dtype=loop_dtype(impl, out)
    )


@pytest.mark.erratum
def test_transpose_2_by_3_becomes_3_by_2(impl: Impl) -> None:
    # Erratum (review): it claims the transpose of a (2, 3) array keeps shape (2, 3).
    x = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    out = impl.run("transpose", impl.arr(x))
    check_close(impl, out, x.T, what="transpose of (2, 3)", rtol=0, atol=0)


@pytest.mark.erratum
def test_reshape_vector_to_scalar_is_rejected(impl: Impl) -> None:
    # Erratum (review): it claims a 3-vector reshapes to shape ().
    x = impl.arr(np.array([1.0, 2.0, 3.0]))
    check_equal(impl, impl.run("reshape", x, (3, 1)).shape, (3, 1), what="(3,) -> (3, 1)")
    impl.rejects("reshape", x, ())


def test_vector_addition_of_the_two_points_of_figure_2_6_in_both_orders(impl: Impl) -> None:
    a, b = np.array([0.5, 1.0]), np.array([1.0, 0.25])
    ta, tb = impl.arr(a), impl.arr(b)
    check_close(impl, impl.run("vector_add", ta, tb), np.array([1.5, 1.25]), what="A + B")
    check_close(impl, impl.run("vector_add", tb, ta), np.array([1.5, 1.25]), what="B + A")
    check_equal(impl, impl.to_np(ta), a.astype(impl.dtype), what="vector_add must not change A")
    pts = np.array([[0.1, -2.0], [3.0, 1e-9]])
    check_close(
        impl,
        impl.run("vector_add", impl.arr(pts), impl.arr(-pts[::-1].copy())),
        pts - pts[::-1],
        what="a batch of points",
    )


def test_vector_addition_rejects_points_of_different_shapes(impl: Impl) -> None:
    impl.run("vector_add", impl.arr(np.ones(2)), impl.arr(np.ones(2)))
    impl.rejects("vector_add", impl.arr(np.ones(2)), impl.arr(np.ones(3)))


@pytest.mark.parametrize("theta", [math.pi / 6, math.pi / 2, 2.0, -1.0])
def test_rotation_by_theta_turns_row_vectors_counter_clockwise(impl: Impl, theta: float) -> None:
    # Convention: R = [u, v] with rows u = [cos, sin], v = [-sin, cos]; dot(x, R) rotates the
    # row vector x counter-clockwise by theta.
    pts = np.array([[1.0, 0.0], [0.0, 1.0], [0.5, 1.0], [-3.0, 0.25]])
    t = impl.arr(pts)
    out = impl.run("rotate", t, theta)
    expected = np.stack(
        [
            np.cos(theta) * pts[:, 0] - np.sin(theta) * pts[:, 1],
            np.sin(theta) * pts[:, 0] + np.cos(theta) * pts[:, 1],
        ],
        axis=1,
    )
    check_close(impl, out, expected, what=f"rotation by {theta:.3f} rad")
    check_equal(
        impl, impl.to_np(t), pts.astype(impl.dtype), what="rotate must not change its input"
    )


def test_rotation_of_one_point_and_by_a_full_turn(impl: Impl) -> None:
    p = np.array([0.5, 1.0])
    check_close(
        impl,
        impl.run("rotate", impl.arr(p), math.pi / 2),
        np.array([-1.0, 0.5]),
        what="[0.5, 1] by 90 degrees",
    )
    pts = np.array([[2.0, -1.0], [0.3, 0.4]])
    check_close(impl, impl.run("rotate", impl.arr(pts), 2 * math.pi), pts, what="a full turn")


def test_rotation_rejects_points_that_are_not_2d(impl: Impl) -> None:
    impl.run("rotate", impl.arr(np.ones((4, 2))), 1.0)
    impl.rejects("rotate", impl.arr(np.ones((4, 3))), 1.0)


shapes = st.lists(st.integers(1, 4), min_size=1, max_size=4)
# the impl fixture is stateless apart from its call log, so reusing it across examples is
# fine; no shrinking: a failing implementation (or mutant) would shrink for a long time
fixture_ok = settings(
    suppress_health_check=[HealthCheck.function_scoped_fixture],
    phases=(Phase.explicit, Phase.reuse, Phase.generate),
)


@fixture_ok
@given(shape=shapes, k=st.integers(0, 3), seed=st.integers(0, 1000))
def test_property_broadcast_add_matches_numpy(
    impl: Impl, shape: list[int], k: int, seed: int
) -> None:
    k = min(k, len(shape) - 1)
    rng = np.random.default_rng(seed)
    x, y = rng.normal(size=shape), rng.normal(size=shape[k:])
    out = impl.run("add", impl.arr(x), impl.arr(y))
    check_close(impl, out, x + y, what=f"add {tuple(shape)} + {tuple(shape[k:])}")


@fixture_ok
@given(xs=shapes, ys=st.lists(st.integers(1, 4), min_size=0, max_size=2), seed=st.integers(0, 999))
def test_property_dot_matches_numpy(impl: Impl, xs: list[int], ys: list[int], seed: int) -> None:
    y_shape = [*ys[:-1], xs[-1], *ys[-1:]] if ys else [xs[-1]]
    rng = np.random.default_rng(seed)
    x, y = rng.normal(size=xs), rng.normal(size=y_shape)
    out = impl.run("dot", impl.arr(x), impl.arr(y))
    check_close(
        impl,
        out,
        np.dot(x, y),
        what=f"dot {tuple(xs)} . {tuple(y_shape)}",
        rtol=1e-5 if impl.dtype == "float32" else None,
    )


@pytest.mark.requires("naive_ops")
@fixture_ok
@given(m=st.integers(1, 4), n=st.integers(1, 4), p=st.integers(1, 4), seed=st.integers(0, 999))
def test_property_naive_matrix_dot_matches(impl: Impl, m: int, n: int, p: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    x, y = rng.normal(size=(m, n)), rng.normal(size=(n, p))
    out = impl.run("naive_matrix_dot", impl.arr(x), impl.arr(y))
    check_close(
        impl,
        out,
        x @ y,
        what=f"naive_matrix_dot ({m}, {n}) . ({n}, {p})",
        rtol=1e-5 if impl.dtype == "float32" else None,
        expect_dtype=loop_dtype(impl, out),
    )


@pytest.mark.erratum
def test_transpose_is_not_a_reshape(impl: Impl) -> None:
    # Erratum (review): "transposing is the reverse of reshaping". Reshape keeps the
    # row-major order of the coefficients; transposition exchanges rows and columns.
    x = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    r = impl.run("reshape", impl.arr(x), (3, 2))
    t = impl.run("transpose", impl.arr(x))
    check_close(
        impl,
        r,
        np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]),
        what="reshape to (3, 2)",
        rtol=0,
        atol=0,
    )
    check_close(
        impl, t, np.array([[1.0, 4.0], [2.0, 5.0], [3.0, 6.0]]), what="transpose", rtol=0, atol=0
    )
