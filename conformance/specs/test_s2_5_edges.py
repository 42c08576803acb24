"""§2.5 edges found by mutation testing (conformance/MUTATION.md): one-sample batches and
evaluation, and batches of a size that does not divide the data."""

from __future__ import annotations

import numpy as np
import pytest

from conformance.golden import SMALL_LAYERS, load_case
from conformance.harness import Impl, check, check_close, check_equal

pytestmark = pytest.mark.section("2.5")


def test_batches_of_a_single_sample(impl: Impl) -> None:
    x = np.array([[7]], dtype=np.int64)
    y = np.array([3], dtype=np.int64)
    batches = impl.call("batches", impl.arr(x, "int64"), impl.arr(y, "int64"), 4)
    check_equal(impl, len(batches), 1, what="number of batches of 1 sample with batch_size 4")
    bx, by = batches[0]
    check_equal(impl, impl.to_np(bx), x, what="the one batch's images")
    check_equal(impl, impl.to_np(by), y, what="the one batch's labels")


def test_evaluate_a_single_sample(impl: Impl) -> None:
    c = load_case("dense_forward")
    model = impl.call(
        "dense_model", SMALL_LAYERS, [w.astype(impl.dtype) for w in c.weights("w")], 0
    )
    x = c["x"][:1]
    right = c["out"][:1].argmax(axis=1).astype(np.int64)
    wrong = (right + 1) % 4
    acc_right = impl.scalar("evaluate", model, impl.arr(x), impl.arr(right, "int64"))
    acc_wrong = impl.scalar("evaluate", model, impl.arr(x), impl.arr(wrong, "int64"))
    check(
        impl,
        (acc_right, acc_wrong) == (1.0, 0.0),
        f"evaluate on one sample: 1.0 with its label, 0.0 with another; got "
        f"{acc_right} and {acc_wrong}",
    )


def test_loss_on_logits_of_very_different_scales_per_row(impl: Impl) -> None:
    # logsumexp must be stabilised per row: a shift by the batch's largest logit sends the
    # second row's exponentials to 0 (log 0 = -inf). Expected values by hand:
    # row 0: logsumexp(1000, 999, 998) - 1000 = log(1 + e^-1 + e^-2)
    # row 1: logsumexp(-1000, -999, -1001) - (-1001) = 2 + log(1 + e^-1 + e^-2)
    z = np.array([[1000.0, 999.0, 998.0], [-1000.0, -999.0, -1001.0]])
    labels = np.array([0, 2], dtype=np.int64)
    out = impl.run(
        "sparse_categorical_crossentropy", impl.arr(labels, "int64"), impl.arr(z), from_logits=True
    )
    base = float(np.log1p(np.exp(-1.0) + np.exp(-2.0)))
    check_close(
        impl,
        out,
        np.array([base, 2.0 + base]),
        what="per-sample loss on logits of scale 1000 and -1000",
    )
