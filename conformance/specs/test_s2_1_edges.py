"""§2.1 edges found by mutation testing (conformance/MUTATION.md): Keras' initialiser is
seeded, and draws in float64 in a float64 grade; preprocess checks the images' shape, not
just their size (capability ``input_checks``)."""

from __future__ import annotations

import numpy as np
import pytest

from conformance.harness import Impl, check

pytestmark = pytest.mark.section("2.1")


@pytest.mark.requires("keras_init")
def test_glorot_uniform_same_seed_same_draw_other_seed_other_draw(impl: Impl) -> None:
    a = impl.run("glorot_uniform", 30, 20, 7).astype(np.float64)
    b = impl.run("glorot_uniform", 30, 20, 7).astype(np.float64)
    c = impl.run("glorot_uniform", 30, 20, 8).astype(np.float64)
    check(impl, np.array_equal(a, b), "glorot_uniform with seed 7 twice must give the same draw")
    check(impl, not np.array_equal(a, c), "glorot_uniform with seeds 7 and 8 gave the same draw")


@pytest.mark.requires("keras_init")
def test_glorot_uniform_draws_in_float64_in_a_float64_grade(impl: Impl) -> None:
    if impl.dtype != "float64":
        pytest.skip("only a float64 grade can tell float64 draws from float32 ones")
    w = impl.run("glorot_uniform", 30, 20, 0)
    as_f32 = w.astype(np.float32).astype(np.float64)
    check(
        impl,
        not np.array_equal(w.astype(np.float64), as_f32),
        "glorot_uniform(30, 20, 0): every value is a float32 number, so the draw was made in "
        "float32; a float64 grade expects float64 draws",
    )


@pytest.mark.requires("input_checks")
def test_preprocess_rejects_784_pixels_in_the_wrong_shape(impl: Impl) -> None:
    # (3, 14, 56) images hold 784 pixels each: reshape((3, 784)) alone would accept them
    impl.run("preprocess", impl.arr(np.zeros((3, 28, 28), dtype=np.uint8), "uint8"))
    impl.rejects("preprocess", impl.arr(np.zeros((3, 14, 56), dtype=np.uint8), "uint8"))
