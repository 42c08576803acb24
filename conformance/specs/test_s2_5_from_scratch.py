"""§2.5 The first example from scratch: NaiveDense, batches, the loss, training, evaluate."""

from __future__ import annotations

import math

import numpy as np
import pytest

from conformance.golden import SMALL_LAYERS, load_case
from conformance.harness import Impl, accuracy_atol, check, check_close, check_equal, fail

pytestmark = pytest.mark.section("2.5")

CHAPTER_MODEL = [(784, 512, "relu"), (512, 10, "softmax")]


def _model(impl: Impl, case: str, prefix: str = "w"):  # type: ignore[no-untyped-def]
    c = load_case(case)
    return c, impl.call(
        "dense_model", SMALL_LAYERS, [w.astype(impl.dtype) for w in c.weights(prefix)], 0
    )


@pytest.mark.requires("random_init")
def test_naive_dense_init_shapes_range_zero_bias(impl: Impl) -> None:
    model = impl.call("dense_model", CHAPTER_MODEL, None, 0)
    ws = [impl.to_np(w, f"weights[{i}]") for i, w in enumerate(impl.call("model_weights", model))]
    check_equal(impl, len(ws), 4, what="len(model.weights) of the chapter's model")
    check_equal(
        impl, [w.shape for w in ws], [(784, 512), (512,), (512, 10), (10,)], what="weight shapes"
    )
    for i in (0, 2):
        w = ws[i].astype(np.float64)
        # U[0, 0.1) (2nd edition) or Keras' "uniform", U[-0.05, 0.05] (3rd edition)
        check(
            impl,
            (w.min() >= 0 and w.max() < 0.1) or (w.min() >= -0.05 and w.max() <= 0.05),
            f"weights[{i}] must lie in [0, 0.1) (2nd edition) or [-0.05, 0.05] (3rd), got "
            f"[{w.min():.4g}, {w.max():.4g}]",
        )
    for i in (1, 3):
        check(impl, bool(np.all(ws[i] == 0)), f"bias weights[{i}] must start at zero")
    # NumPy's default float is float64, TensorFlow's and PyTorch's float32 (the book's
    # NaiveDense draws with tf.random.uniform): either is the framework's default
    check(
        impl,
        str(ws[0].dtype) in ("float64", "float32"),
        f"default dtype of the weights: a float (float64 or float32), got {ws[0].dtype}",
    )
    m1 = impl.call("dense_model", [(20, 30, "relu")], None, 1)
    w1 = impl.to_np(impl.call("model_weights", m1)[0])
    m1b = impl.call("dense_model", [(20, 30, "relu")], None, 1)
    check_equal(impl, impl.to_np(impl.call("model_weights", m1b)[0]), w1, what="seed 1, twice")
    m2 = impl.call("dense_model", [(20, 30, "relu")], None, 2)
    w2 = impl.to_np(impl.call("model_weights", m2)[0])
    check(impl, not np.array_equal(w1, w2), "seeds 1 and 2 must draw different W")


def test_model_weights_given_are_used(impl: Impl) -> None:
    c, model = _model(impl, "dense_forward")
    ws = [impl.to_np(w) for w in impl.call("model_weights", model)]
    for i, (got, want) in enumerate(zip(ws, c.weights(), strict=True)):
        check_close(
            impl, got, want.astype(impl.dtype), what=f"weights[{i}] after loading", rtol=0, atol=0
        )


def test_dense_forward_golden(impl: Impl) -> None:
    c, model = _model(impl, "dense_forward")
    x = impl.arr(c["x"])
    out = impl.run("predict", model, x)
    check_equal(impl, impl.to_np(x), c["x"].astype(impl.dtype), what="predict must not change x")
    check_close(impl, out, c["out"], what="activation(x @ W + b) through 6-5(relu)-4(softmax)")
    check_close(impl, out.sum(axis=1), np.ones(len(out)), what="softmax rows sum to 1")


def test_batch_generator_469_batches_last_96_in_order(impl: Impl) -> None:
    n = 60000
    images = np.arange(n, dtype=np.int64).reshape(n, 1)
    labels = np.arange(n, dtype=np.int64)
    batches = impl.call("batches", impl.arr(images, "int64"), impl.arr(labels, "int64"), 128)
    check_equal(impl, len(batches), 469, what="number of batches of 60,000 at 128")
    sizes = [len(impl.to_np(b[1])) for b in batches]
    check_equal(impl, sizes[-1], 96, what="size of the last (partial) batch")
    check(impl, all(s == 128 for s in sizes[:-1]), "all batches but the last hold 128 samples")
    order = np.concatenate([impl.to_np(b[1]) for b in batches])
    check_equal(impl, order, labels, what="batches cover the data in order, without shuffling")
    pairs = np.concatenate([impl.to_np(b[0])[:, 0] for b in batches])
    check_equal(impl, pairs, labels, what="images and labels stay paired")


@pytest.mark.erratum
@pytest.mark.parametrize("batch_size", [1, 7, 64, 1000])
def test_batch_size_is_honoured(impl: Impl, batch_size: int) -> None:
    # Erratum (notebook): fit() built BatchGenerator(images, labels), ignoring batch_size.
    x = np.arange(300, dtype=np.int64)
    tx = impl.arr(x, "int64")
    batches = impl.call("batches", tx, impl.arr(10 * x, "int64"), batch_size)
    check_equal(impl, len(batches), math.ceil(300 / batch_size), what=f"batches at {batch_size}")
    sizes = [len(impl.to_np(b[0])) for b in batches]
    last = 300 - batch_size * (len(sizes) - 1)
    check_equal(impl, sizes, [batch_size] * (len(sizes) - 1) + [last], what="batch sizes")
    got = np.concatenate([impl.to_np(b[1]) for b in batches])
    check_equal(impl, got, 10 * x, what="labels in order, each batch's after the last")
    check_equal(impl, impl.to_np(tx), x, what="batches must leave the images untouched")


def test_batches_reject_unequal_lengths_and_batch_size_0(impl: Impl) -> None:
    x = impl.arr(np.arange(10, dtype=np.int64), "int64")
    impl.call("batches", x, x, 4)
    impl.rejects("batches", x, impl.arr(np.arange(9, dtype=np.int64), "int64"), 4)
    impl.rejects("batches", x, x, 0)


def test_steps_per_epoch_and_over_five_epochs(impl: Impl) -> None:
    x = np.zeros((60000, 1))
    steps = len(
        impl.call("batches", impl.arr(x), impl.arr(np.zeros(60000, np.int64), "int64"), 128)
    )
    check_equal(impl, (steps, 5 * steps), (469, 2345), what="steps per epoch, and over 5 epochs")


def test_shuffling_is_a_seeded_permutation(impl: Impl) -> None:
    x = np.arange(500, dtype=np.int64)
    one = impl.call("batches", impl.arr(x, "int64"), impl.arr(-x, "int64"), 64, True, 3)
    two = impl.call("batches", impl.arr(x, "int64"), impl.arr(-x, "int64"), 64, True, 3)
    a = np.concatenate([impl.to_np(b[0]) for b in one])
    b = np.concatenate([impl.to_np(b[0]) for b in two])
    labels = np.concatenate([impl.to_np(bb[1]) for bb in one])
    check_equal(impl, np.sort(a), x, what="shuffled samples are a permutation")
    check(impl, not np.array_equal(a, x), "shuffle=True must change the order")
    check_equal(impl, a, b, what="the same seed gives the same shuffle")
    check_equal(impl, labels, -a, what="shuffling keeps images and labels paired")
    other = impl.call("batches", impl.arr(x, "int64"), impl.arr(-x, "int64"), 64, True, 4)
    c = np.concatenate([impl.to_np(bb[0]) for bb in other])
    check(impl, not np.array_equal(a, c), "seeds 3 and 4 must give different shuffles")


@pytest.mark.parametrize("field", ["loss", "grad"])
def test_loss_on_probabilities_clips_and_renormalises(impl: Impl, field: str) -> None:
    c = load_case("loss_probabilities")
    labels, p = impl.arr(c["labels"], "int64"), impl.arr(c["p"])
    if field == "loss":
        out = impl.run("sparse_categorical_crossentropy", labels, p)
        check_close(
            impl,
            out,
            c["loss"],
            what="per-sample loss (TF 2.6 eager: clip, log, softmax cross-entropy on the logs)",
        )
    else:
        if not impl.claims("autodiff"):
            pytest.skip("not claimed: autodiff")
        out = impl.run("loss_gradient", labels, p)
        check_close(
            impl,
            out,
            c["grad"],
            kind="grad",
            what="d mean loss / d probabilities (zero where clipping acted)",
        )
        clipped = (c["p"] < 1e-7) | (c["p"] > 1 - 1e-7)
        check(
            impl,
            bool(np.all(out[clipped] == 0)),
            f"the gradient must be exactly 0 where clipping acted ({int(clipped.sum())} entries)",
        )


def test_loss_on_logits(impl: Impl) -> None:
    c = load_case("loss_logits")
    out = impl.run(
        "sparse_categorical_crossentropy",
        impl.arr(c["labels"], "int64"),
        impl.arr(c["z"]),
        from_logits=True,
    )
    check_close(impl, out, c["loss"], what="softmax cross-entropy on logits")


def test_loss_on_large_logits_is_finite_and_leaves_inputs(impl: Impl) -> None:
    z = np.array([[1000.0, -1000.0, 0.0], [-800.0, 800.0, 799.0], [5.0, 5.0, 5.0]])
    labels = np.array([1, 2, 0])
    tz, tl = impl.arr(z), impl.arr(labels, "int64")
    out = impl.run("sparse_categorical_crossentropy", tl, tz, from_logits=True)
    # logsumexp - z_y, by hand: ties give log(3)
    expected = np.array([2000.0, 1.0 + np.log1p(np.exp(-1.0)), np.log(3.0)])
    # float32 holds 800.31 to within 6e-5: the absolute tolerance follows the logits' scale
    check_close(
        impl,
        out,
        expected,
        what="cross-entropy of extreme logits and a three-way tie",
        atol=1e-4 if impl.dtype == "float32" else None,
    )
    check_equal(
        impl, impl.to_np(tz), z.astype(impl.dtype), what="the loss must not change the logits"
    )
    check_equal(impl, impl.to_np(tl), labels, what="the loss must not change the labels")


def test_loss_rejects_labels_out_of_range_and_unequal_lengths(impl: Impl) -> None:
    p = impl.arr(np.full((2, 3), 1 / 3))
    impl.run("sparse_categorical_crossentropy", impl.arr(np.array([0, 2]), "int64"), p)
    impl.rejects("sparse_categorical_crossentropy", impl.arr(np.array([0, 3]), "int64"), p)
    # label -1: NumPy indexing would silently read the last class
    impl.rejects("sparse_categorical_crossentropy", impl.arr(np.array([-1, 2]), "int64"), p)
    impl.rejects("sparse_categorical_crossentropy", impl.arr(np.array([0, 1, 2]), "int64"), p)


def test_predict_softmax_of_large_logits_and_identity_layer(impl: Impl) -> None:
    W = np.array([[1000.0, -1000.0, 0.0], [0.5, 0.25, -0.125]])
    b = np.array([0.0, 1.0, -1.0])
    x = np.array([[1.0, 0.0], [-1.0, 2.0], [0.0, 0.0]])
    z = x @ W + b
    e = np.exp(z - z.max(axis=1, keepdims=True))
    soft = impl.call(
        "dense_model", [(2, 3, "softmax")], [W.astype(impl.dtype), b.astype(impl.dtype)], 0
    )
    out = impl.run("predict", soft, impl.arr(x))
    check_close(impl, out, e / e.sum(axis=1, keepdims=True), what="softmax of logits up to 1000")
    ident = impl.call(
        "dense_model", [(2, 3, "identity")], [W.astype(impl.dtype), b.astype(impl.dtype)], 0
    )
    check_close(impl, impl.run("predict", ident, impl.arr(x)), z, what="identity: x @ W + b")


@pytest.mark.requires("autodiff")
def test_loss_gradient_on_logits_is_softmax_minus_one_hot_over_n(impl: Impl) -> None:
    c = load_case("loss_logits")
    z = impl.arr(c["z"])
    out = impl.run("loss_gradient", impl.arr(c["labels"], "int64"), z, from_logits=True)
    check_close(impl, out, c["grad"], kind="grad", what="d mean loss / d logits")
    check_equal(impl, impl.to_np(z), c["z"].astype(impl.dtype), what="loss_gradient keeps z")


@pytest.mark.requires("autodiff")
def test_model_gradients_golden(impl: Impl) -> None:
    c, model = _model(impl, "model_gradients")
    grads = impl.run_many("model_gradients", model, impl.arr(c["x"]), impl.arr(c["y"], "int64"))
    for i, g in enumerate(grads):
        check_close(
            impl, g, c[f"g{i}"], kind="grad", what=f"gradient of the mean loss wrt weights[{i}]"
        )


@pytest.mark.requires("training")
@pytest.mark.erratum
def test_one_training_step_golden(impl: Impl) -> None:
    # Erratum (3rd edition, Listing 2.9): the gradients of the per-sample `loss` (its sum)
    # instead of `average_loss`: a step batch-size times too large. The step is on the mean.
    c, model = _model(impl, "training_step")
    x, y = impl.arr(c["x"]), impl.arr(c["y"], "int64")
    loss = impl.scalar("training_step", model, x, y, 0.1)
    check_equal(impl, impl.to_np(x), c["x"].astype(impl.dtype), what="the step keeps the images")
    check_equal(impl, impl.to_np(y), c["y"], what="the step keeps the labels")
    check_close(impl, np.array(loss, dtype=impl.dtype), c["loss"], what="loss of the step")
    for i, w in enumerate(impl.call("model_weights", model)):
        check_close(
            impl,
            impl.to_np(w),
            c[f"after{i}"],
            kind="grad",
            what=f"weights[{i}] after one SGD step of lr 0.1 on the mean loss",
        )


@pytest.mark.requires("training")
def test_sgd_optimizer_equals_manual_update(impl: Impl) -> None:
    c = load_case("training_step")
    ws = [w.astype(impl.dtype) for w in c.weights()]
    manual = impl.call("dense_model", SMALL_LAYERS, ws, 0)
    opt = impl.call("dense_model", SMALL_LAYERS, ws, 0)
    x, y = impl.arr(c["x"]), impl.arr(c["y"], "int64")
    impl.call("training_step", manual, x, y, 0.1, "manual")
    impl.call("training_step", opt, x, y, 0.1, "sgd")
    for i, (a, b) in enumerate(
        zip(impl.call("model_weights", manual), impl.call("model_weights", opt), strict=True)
    ):
        check_close(
            impl, impl.to_np(b), impl.to_np(a), what=f"weights[{i}]: SGD optimizer vs manual"
        )


@pytest.mark.requires("training")
@pytest.mark.erratum
def test_update_touches_only_the_model_trained(impl: Impl) -> None:
    # Erratum (notebook): the first update_weights updated the global model's weights.
    c = load_case("training_step")
    ws = [w.astype(impl.dtype) for w in c.weights()]
    a = impl.call("dense_model", SMALL_LAYERS, ws, 0)
    b = impl.call("dense_model", SMALL_LAYERS, ws, 0)
    x, y = impl.arr(c["x"]), impl.arr(c["y"], "int64")
    impl.call("training_step", a, x, y, 0.1)
    impl.call("training_step", b, x, y, 0.1)
    impl.call("training_step", b, x, y, 0.1)
    for i, w in enumerate(impl.call("model_weights", a)):
        check_close(
            impl,
            impl.to_np(w),
            c[f"after{i}"],
            kind="grad",
            what=f"model A's weights[{i}] after its one step (B's steps must not touch A)",
        )


@pytest.mark.requires("training")
def test_trajectory_of_20_steps_within_envelope(impl: Impl) -> None:
    c, model = _model(impl, "trajectory")
    x, y = c["x"], c["y"]
    losses = []
    for k in range(20):
        sl = slice(8 * k, 8 * (k + 1))
        losses.append(
            impl.scalar("training_step", model, impl.arr(x[sl]), impl.arr(y[sl], "int64"), 0.5)
        )
    _check_path(
        impl,
        model,
        c,
        losses,
        "losses of 20 SGD steps from identical weights and batches",
        "20 steps",
    )


def _check_path(impl: Impl, model, c, losses, what: str, after: str) -> None:  # type: ignore[no-untyped-def]
    """The losses along a training path and the weights at its end, against the golden case."""
    # envelope: float64 1e-9 relative; float32 1e-4 relative (rounding grows along the path)
    rtol = 1e-9 if impl.dtype == "float64" else 1e-4
    check_close(
        impl, np.array(losses, dtype=impl.dtype), c["losses"], rtol=rtol, atol=rtol, what=what
    )
    for i, w in enumerate(impl.call("model_weights", model)):
        check_close(
            impl,
            impl.to_np(w),
            c[f"final{i}"],
            rtol=rtol,
            atol=rtol,
            what=f"weights[{i}] after {after}",
        )


@pytest.mark.requires("training")
def test_update_weights_subtracts_lr_times_gradient_from_the_weights_given(impl: Impl) -> None:
    c = load_case("model_gradients")
    ws = [w.astype(impl.dtype) for w in c.weights()]
    model = impl.call("dense_model", SMALL_LAYERS, ws, 0)
    weights = impl.call("model_weights", model)
    grads = [impl.arr(c[f"g{i}"]) for i in range(4)]
    impl.call("update_weights", grads[:2], weights[:2], 0.25)
    # in-process, ``ws`` would show a write: a model keeping the caller's arrays fails here
    impl.check_unwritten(ws, "weights")
    after = [impl.to_np(w) for w in impl.call("model_weights", model)]
    for i in range(4):
        want = ws[i] - 0.25 * c[f"g{i}"].astype(impl.dtype) if i < 2 else ws[i]
        check_close(impl, after[i], want, what=f"weights[{i}] after update_weights of weights[:2]")
        check_equal(
            impl,
            impl.to_np(grads[i]),
            c[f"g{i}"].astype(impl.dtype),
            what=f"gradients[{i}] unchanged",
        )


def _fit(impl: Impl, c, x, y, epochs: int, batch_size: int):  # type: ignore[no-untyped-def]
    model = impl.call("dense_model", SMALL_LAYERS, [w.astype(impl.dtype) for w in c.weights()], 0)
    out = impl.call("fit", model, x, y, epochs, batch_size, 0.5)
    try:
        losses = [[float(v) for v in epoch] for epoch in out]
    except Exception as exc:
        fail(
            f"fit must return the batch losses, one list per epoch, got {type(out).__name__} "
            f"({exc})"
        )
    return model, losses


@pytest.mark.requires("training")
def test_fit_runs_2_epochs_in_order_with_a_short_last_batch(impl: Impl) -> None:
    c = load_case("fit")
    x, y = impl.arr(c["x"]), impl.arr(c["y"], "int64")
    model, losses = _fit(impl, c, x, y, 2, 8)
    check_equal(
        impl, [len(e) for e in losses], [4, 4], what="batches per epoch (30 at 8: 8, 8, 8, 6)"
    )
    _check_path(
        impl, model, c, losses, "batch losses of 2 epochs of the book's step, in order", "fit"
    )
    check_equal(
        impl, impl.to_np(x), c["x"].astype(impl.dtype), what="fit must not change the images"
    )
    check_equal(impl, impl.to_np(y), c["y"], what="fit must not change the labels")


@pytest.mark.requires("training")
@pytest.mark.erratum
def test_fit_honours_batch_size_7(impl: Impl) -> None:
    # Erratum (notebook): fit() built BatchGenerator(images, labels), ignoring batch_size.
    c = load_case("fit")
    _, losses = _fit(impl, c, impl.arr(c["x"]), impl.arr(c["y"], "int64"), 1, 7)
    check_equal(impl, [len(e) for e in losses], [5], what="30 samples at batch 7: 5 batches")


@pytest.mark.requires("training")
def test_fit_over_300_samples_128_at_a_time(impl: Impl) -> None:
    # more than one default batch: a fit that looks at the first 128 samples only, or
    # drops the short last batch, ends elsewhere
    c = load_case("fit_300")
    x, y = impl.arr(c["x"]), impl.arr(c["y"], "int64")
    model, losses = _fit(impl, c, x, y, 1, 128)
    check_equal(impl, [len(e) for e in losses], [3], what="batches of 300 at 128: 128, 128, 44")
    _check_path(impl, model, c, losses, "batch losses of 1 epoch over 300 samples", "fit")


@pytest.mark.requires("training")
def test_fit_rejects_images_and_labels_of_unequal_length(impl: Impl) -> None:
    c = load_case("fit")
    x, y = impl.arr(c["x"]), impl.arr(c["y"], "int64")
    model, _ = _fit(impl, c, x, y, 1, 8)
    impl.rejects("fit", model, x, impl.arr(c["y"][:29], "int64"), 1, 8, 0.5)


@pytest.mark.parametrize("batch_size", [3, 8, 100])
def test_evaluate_batch_by_batch_counts_every_sample(impl: Impl, batch_size: int) -> None:
    c, model = _model(impl, "dense_forward")
    labels = c["out"].argmax(axis=1).copy()
    labels[[0, 4, 7]] = (labels[[0, 4, 7]] + 1) % 4  # 3 of 8 wrong, one in the short last batch
    acc = impl.scalar("evaluate", model, impl.arr(c["x"]), impl.arr(labels, "int64"), batch_size)
    ok = abs(acc - 5 / 8) < accuracy_atol(impl, 8)
    check(impl, ok, f"evaluate in batches of {batch_size}: 5/8, got {acc}")


@pytest.mark.parametrize("batch_size", [None, 128, 7])
def test_evaluate_over_300_samples_counts_every_batch(impl: Impl, batch_size: int | None) -> None:
    # more than two default batches (128, 128, 44), one mistake in each: 297 of 300. The
    # model is the identity, so its prediction is each row's argmax (computed here)
    x = np.random.default_rng(29).normal(size=(300, 3))
    labels = x.argmax(axis=1)
    for i in (5, 130, 299):
        labels[i] = (labels[i] + 1) % 3
    model = impl.call(
        "dense_model",
        [(3, 3, "identity")],
        [np.eye(3, dtype=impl.dtype), np.zeros(3, impl.dtype)],
        0,
    )
    acc = impl.scalar("evaluate", model, impl.arr(x), impl.arr(labels, "int64"), batch_size)
    check(
        impl,
        abs(acc - 297 / 300) < accuracy_atol(impl, 300),
        f"evaluate of 300 samples in batches of {batch_size}: 297/300 = 0.99, got {acc}",
    )


def test_evaluate_rejects_images_and_labels_of_unequal_length(impl: Impl) -> None:
    c, model = _model(impl, "dense_forward")
    x = impl.arr(c["x"])
    impl.scalar("evaluate", model, x, impl.arr(np.zeros(8, dtype=np.int64), "int64"))
    impl.rejects("evaluate", model, x, impl.arr(np.zeros(7, dtype=np.int64), "int64"))
    # too many labels too: slicing them to the batch would hide the mismatch
    impl.rejects("evaluate", model, x, impl.arr(np.zeros(9, dtype=np.int64), "int64"))


def test_evaluate_breaks_prediction_ties_by_the_first_class(impl: Impl) -> None:
    model = impl.call(
        "dense_model",
        [(3, 4, "identity")],
        [np.zeros((3, 4), impl.dtype), np.zeros(4, impl.dtype)],
        0,
    )
    x = impl.arr(np.ones((6, 3)))
    acc = impl.scalar("evaluate", model, x, impl.arr(np.array([0, 0, 1, 2, 0, 3]), "int64"))
    check(
        impl, abs(acc - 0.5) < 1e-12, f"all-tied predictions pick class 0 (argmax): 3/6, got {acc}"
    )


def test_evaluate_accuracy(impl: Impl) -> None:
    c, model = _model(impl, "dense_forward")
    probs = c["out"]
    labels = probs.argmax(axis=1).copy()
    labels[:3] = (labels[:3] + 1) % 4  # 3 of 8 wrong
    acc = impl.scalar("evaluate", model, impl.arr(c["x"]), impl.arr(labels, "int64"))
    check(impl, abs(acc - 5 / 8) < 1e-12, f"evaluate must return accuracy 5/8 = 0.625, got {acc}")
