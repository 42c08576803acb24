"""§2.1 A first look at a neural network, in idiomatic PyTorch but Keras-faithful.

The book's model is ``keras.Sequential([Dense(512, "relu"), Dense(10, "softmax")])``
compiled with ``optimizer="rmsprop"`` and ``loss="sparse_categorical_crossentropy"``, then
``fit(train_images, train_labels, epochs=5, batch_size=128)``. To get the book's numbers
in torch the defaults must be Keras', not torch's:

- Dense kernels use glorot_uniform, U(-limit, limit) with limit = sqrt(6 / (fan_in +
  fan_out)), and zero biases (torch's Linear default is a scaled Kaiming uniform);
- Keras 2.6's default RMSprop (lr 1e-3, rho 0.9, epsilon 1e-7 added *outside* the square
  root, no momentum) equals ``torch.optim.RMSprop(lr=1e-3, alpha=0.9, eps=1e-7)``;
  torch's own default alpha is 0.99 and eps 1e-8;
- ``fit`` computes the cross-entropy from the softmax's logits, so the module outputs
  logits and ``predict`` applies the softmax;
- ``fit`` reshuffles the training data every epoch: 469 steps per epoch at batch 128 on
  60,000 samples, 2,345 over 5 epochs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dl_ch2._checks import (
    DeviceLike,
    require_positive_int,
    require_tensor,
    resolve_device,
    shape_str,
)
from dl_ch2.batch_generator import num_batches

if TYPE_CHECKING:
    from dl_ch2.distributed import DataParallel

__all__ = [
    "KERAS_RMSPROP_DEFAULTS",
    "build_first_example_model",
    "glorot_uniform_",
    "glorot_uniform_limit",
    "keras_rmsprop",
    "predict",
    "train_first_example",
]

#: Keras 2.6 ``RMSprop()`` defaults in torch's names.
KERAS_RMSPROP_DEFAULTS: dict[str, float] = {"lr": 1e-3, "alpha": 0.9, "eps": 1e-7}


def glorot_uniform_limit(fan_in: int, fan_out: int) -> float:
    """Keras' glorot_uniform bound, ``sqrt(6 / (fan_in + fan_out))``."""
    require_positive_int("fan_in", fan_in)
    require_positive_int("fan_out", fan_out)
    return math.sqrt(6.0 / (fan_in + fan_out))


def glorot_uniform_(weight: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Fill a Linear weight of shape (out, in) from U(-limit, limit), in place.

    Draws on the generator's device (CPU by default) and copies, so one seed gives the same
    weights on every device.
    """
    fan_out, fan_in = weight.shape
    limit = glorot_uniform_limit(fan_in, fan_out)
    gen_device = generator.device if generator is not None else torch.device("cpu")
    u = torch.rand(weight.shape, generator=generator, dtype=weight.dtype, device=gen_device)
    with torch.no_grad():
        weight.copy_(u * (2 * limit) - limit)
    return weight


def build_first_example_model(
    *,
    device: DeviceLike = None,
    dtype: torch.dtype = torch.float32,
    generator: torch.Generator | None = None,
) -> nn.Sequential:
    """§2.1: Linear(784, 512) -> ReLU -> Linear(512, 10), Keras init; outputs logits."""
    dev = resolve_device(device)
    hidden = nn.Linear(28 * 28, 512, device=dev, dtype=dtype)
    output = nn.Linear(512, 10, device=dev, dtype=dtype)
    for layer in (hidden, output):
        glorot_uniform_(layer.weight, generator)
        nn.init.zeros_(layer.bias)
    model = nn.Sequential(hidden, nn.ReLU(), output)
    return model


def keras_rmsprop(params: Any, **overrides: float) -> torch.optim.RMSprop:
    """Keras 2.6's default ``RMSprop`` as a ``torch.optim.RMSprop``."""
    kwargs = {**KERAS_RMSPROP_DEFAULTS, **overrides}
    return torch.optim.RMSprop(params, **kwargs)  # type: ignore[arg-type]


def predict(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Class probabilities (softmax of the logits); each row sums to 1."""
    with torch.no_grad():
        return torch.softmax(model(images), dim=-1)


def train_first_example(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    epochs: int = 5,
    batch_size: int = 128,
    optimizer: torch.optim.Optimizer | None = None,
    generator: torch.Generator | None = None,
    on_epoch_end: Callable[[int, float], Any] | None = None,
    fused: bool = True,
    data_parallel: DataParallel | None = None,
) -> list[float]:
    """§2.1: Keras-style ``fit``: reshuffle each epoch, cross-entropy on logits, RMSprop.

    Returns the mean training loss of each epoch. Labels are checked once, up front
    (integer class indices in ``[0, classes)``), so a bad label raises before any weight moves.

    With ``fused=True`` (the default), a stack of ``nn.Linear`` / ``nn.ReLU`` trained by a
    plain ``torch.optim.RMSprop`` (one parameter group, no momentum, centering, weight
    decay or hooks) takes a hand-written step with the same mathematics: forward and
    backward written out into buffers allocated once, and the RMSprop update done over all
    parameters at once. It keeps the optimizer's own state (``step``, ``square_avg``) and
    leaves each step's gradient in ``.grad``, so training can go on with ``opt.step()``;
    it agrees with ``fused=False`` (autograd + ``opt.step()``) to rounding. Anything else
    (hooks, other layers or optimizers, ``fused=False``) runs autograd and ``opt.step()``.

    With ``data_parallel`` (a ``dl_ch2.distributed.DataParallel``, under torchrun) every
    rank passes the same data and shuffling seed; each step runs on the rank's shard of the
    global batch with the gradients all-reduced before ``opt.step()``.
    """
    require_tensor("images", images)
    require_tensor("labels", labels)
    require_positive_int("epochs", epochs)
    require_positive_int("batch_size", batch_size)
    if len(images) != len(labels) or len(images) == 0:
        raise ValueError(
            f"images and labels must be non-empty and of equal length, got {len(images)} "
            f"and {len(labels)}"
        )
    if labels.device != images.device:
        raise ValueError(
            f"labels are on {labels.device} but images on {images.device}; move both to "
            "the model's device"
        )
    label_range = _check_labels(labels)
    opt = optimizer if optimizer is not None else keras_rmsprop(model.parameters())
    n = len(images)
    steps = num_batches(n, batch_size)
    labels = labels.long()
    epoch_losses: list[float] = []
    classes_checked = False
    for epoch in range(epochs):
        perm = torch.randperm(n, generator=generator).to(images.device)
        shuffled_y = labels.index_select(0, perm)
        # re-planned every epoch: on_epoch_end may have added a hook or changed the optimizer
        plan = _fused_plan(model, opt, images) if fused and data_parallel is None else None
        if plan is not None:
            _check_classes(label_range, plan.classes)
            total = plan.epoch(images, perm, shuffled_y, batch_size)
        else:
            total = torch.zeros((), dtype=torch.float64, device=images.device)
            for k in range(steps):
                idx = perm[k * batch_size : (k + 1) * batch_size]
                xb, yb = (
                    images.index_select(0, idx),
                    shuffled_y[k * batch_size : (k + 1) * batch_size],
                )
                if data_parallel is not None:
                    if not classes_checked:
                        with torch.no_grad():
                            _check_classes(label_range, model(xb[:1]).shape[-1])
                        classes_checked = True
                    loss = data_parallel.optimizer_step(model, opt, xb, yb, F.cross_entropy)
                    total += loss.detach() * len(xb)
                    continue
                logits = model(xb)
                if not classes_checked:  # the model's width is known after its first forward
                    _check_classes(label_range, logits.shape[-1])
                    classes_checked = True
                loss = F.cross_entropy(logits, yb)
                opt.zero_grad(set_to_none=True)
                loss.backward()  # type: ignore[no-untyped-call]
                opt.step()
                total += loss.detach() * len(xb)
        mean_loss = float(total) / n
        epoch_losses.append(mean_loss)
        if on_epoch_end is not None:
            on_epoch_end(epoch, mean_loss)
    return epoch_losses


def _check_labels(labels: torch.Tensor) -> tuple[int, int]:
    """Integer, 1-D class indices; returns (min, max) with one host sync."""
    if labels.dtype.is_floating_point or labels.dtype.is_complex or labels.dtype == torch.bool:
        raise TypeError(f"labels must hold integer class indices, got dtype {labels.dtype}")
    if labels.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {shape_str(labels.shape)}")
    lo, hi = torch.aminmax(labels)
    return int(lo), int(hi)


def _check_classes(label_range: tuple[int, int], classes: int) -> None:
    lo, hi = label_range
    if lo < 0 or hi >= classes:
        raise ValueError(
            f"labels must lie in [0, {classes}) for a model with {classes} outputs, "
            f"got values from {lo} to {hi}"
        )


def _has_hooks(*dicts: object) -> bool:
    return any(bool(d) for d in dicts)


def _fused_plan(
    model: nn.Module, opt: torch.optim.Optimizer, images: torch.Tensor
) -> _FusedRMSprop | None:
    """The fused step for this model and optimizer, or None where it would not be exact.

    It declines whatever it cannot reproduce: layers other than exact ``nn.Linear`` (with
    bias) and ``nn.ReLU``, any module, parameter or optimizer hook, autocast, frozen or
    non-contiguous parameters, a dtype or device other than the images', and RMSprop
    options beyond lr/alpha/eps. Hook registries are private torch attributes; if one is
    missing the plan declines (a test pins that the plan is taken on supported torch).
    """
    from torch.nn.modules import module as module_globals
    from torch.optim import optimizer as optim_globals

    if type(model) is not nn.Sequential or images.ndim != 2 or not images.is_floating_point():
        return None
    if torch.is_autocast_enabled(images.device.type):
        return None
    linears: list[nn.Linear] = []
    relu: list[bool] = []
    for m in model:
        if type(m) is nn.Linear and m.bias is not None:
            linears.append(m)
            relu.append(False)
        elif type(m) is nn.ReLU and linears and not relu[-1]:
            relu[-1] = True
        else:
            return None
    if not linears or linears[0].in_features != images.shape[1]:
        return None
    try:
        for m in (model, *model):
            if _has_hooks(
                m._forward_hooks,
                m._forward_pre_hooks,
                m._backward_hooks,
                m._backward_pre_hooks,
            ):
                return None
        if _has_hooks(
            module_globals._global_forward_hooks,
            module_globals._global_forward_pre_hooks,
            module_globals._global_backward_hooks,
            module_globals._global_backward_pre_hooks,
            opt._optimizer_step_pre_hooks,
            opt._optimizer_step_post_hooks,
            optim_globals._global_optimizer_pre_hooks,
            optim_globals._global_optimizer_post_hooks,
        ):
            return None
        params = [p for lin in linears for p in (lin.weight, lin.bias)]
        for p in params:
            if _has_hooks(p._backward_hooks, getattr(p, "_post_accumulate_grad_hooks", None)):
                return None
    except AttributeError:
        return None
    for p in params:
        if not (
            p.requires_grad
            and p.is_contiguous()
            and p.dtype == images.dtype
            and p.device == images.device
        ):
            return None
    if type(opt) is not torch.optim.RMSprop or len(opt.param_groups) != 1:
        return None
    group = opt.param_groups[0]
    if (
        group["momentum"] != 0
        or group["centered"]
        or group["weight_decay"] != 0
        or group["maximize"]
        or group["differentiable"]
        or group["capturable"]
        or isinstance(group["lr"], torch.Tensor)
    ):
        return None
    if len(group["params"]) != len(params) or {id(p) for p in group["params"]} != {
        id(p) for p in params
    }:
        return None
    return _FusedRMSprop(linears, relu, opt, params)


#: Use torch's one-pass Adam kernel for the RMSprop update where it exists (see
#: ``_FusedRMSprop``); tests switch it off to check the composite update too.
_USE_ADAM_KERNEL = True

# Adam's bias corrections are 1 - beta**t; at t = 2**40 both are exactly 1 in float64
_SATURATED_STEP = 2.0**40


class _FusedRMSprop:
    """RMSprop training steps for Linear/ReLU stacks, without autograd's graph.

    Forward: ``a = relu?(a @ W.T + b)`` per layer into buffers allocated once per epoch.
    Backward of the mean cross-entropy on the logits: ``dz = (softmax(logits) -
    onehot(y)) / n``, then per layer ``dW = dz.T @ a_in``, ``db = dz.sum(0)``, and
    ``da_in = dz @ W`` masked where the previous ReLU's output is 0. Each ``p.grad`` is a
    view of one flat buffer, and so is RMSprop's ``square_avg``: nothing weight-sized is
    allocated per step (one 1.6 MB allocation per step cost hundreds of page faults each).

    The update is Keras' RMSprop, ``v = alpha*v + (1-alpha)*g*g``, ``p -= lr * g /
    (sqrt(v) + eps)``. That is Adam with ``beta1 = 0`` (its first moment is then just
    ``g``), ``beta2 = alpha``, and no bias correction; torch's fused Adam kernel does it in
    one pass over the weights instead of five, given a step count so large that
    ``1 - beta**t`` is exactly 1 (and ``g``'s own buffer as the first moment, which it
    rewrites with ``0*g + 1*g = g``). Where that kernel is missing or refuses, the same
    update runs as torch.optim.RMSprop writes it. Either way the optimizer's own
    ``step`` and ``square_avg`` are kept, so ``opt.step()`` can take over at any time.
    """

    def __init__(
        self,
        linears: list[nn.Linear],
        relu: list[bool],
        opt: torch.optim.RMSprop,
        params: list[torch.Tensor],
    ) -> None:
        self.linears, self.relu, self.opt, self.params = linears, relu, opt, params
        self.classes = linears[-1].out_features
        first = params[0]
        total = sum(p.numel() for p in params)
        self.grad_flat = first.new_zeros(total)
        self.square_avg_flat = first.new_zeros(total)
        self.scratch_flat = first.new_empty(total)
        self.grads: list[torch.Tensor] = []
        self.square_avgs: list[torch.Tensor] = []
        self.scratch: list[torch.Tensor] = []
        self.steps: list[torch.Tensor] = []
        offset = 0
        # torch's RMSprop keeps its step counter in the default float dtype's precision
        step_dtype = torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32
        for p in params:
            k = p.numel()
            grad = self.grad_flat[offset : offset + k].view_as(p)
            square_avg = self.square_avg_flat[offset : offset + k].view_as(p)
            self.scratch.append(self.scratch_flat[offset : offset + k].view_as(p))
            offset += k
            state = opt.state[p]
            if state:  # go on from where opt.step() left off
                square_avg.copy_(state["square_avg"])
            else:
                state["step"] = torch.zeros((), dtype=step_dtype)
            state["square_avg"] = square_avg
            self.steps.append(state["step"])
            p.grad = grad
            self.grads.append(grad)
            self.square_avgs.append(square_avg)
        self.use_adam_kernel = _USE_ADAM_KERNEL and hasattr(torch, "_fused_adam_")
        saturated = torch.tensor(_SATURATED_STEP, dtype=torch.float32, device=first.device)
        self.saturated_steps = [saturated] * len(params)

    def epoch(
        self,
        images: torch.Tensor,
        perm: torch.Tensor,
        shuffled_y: torch.Tensor,
        batch_size: int,
    ) -> torch.Tensor:
        """One epoch over ``images[perm]``; returns the summed loss (float64, on device)."""
        lin, relu = self.linears, self.relu
        dev, dt = images.device, images.dtype
        rows = min(batch_size, len(images))
        x_full = torch.empty(rows, images.shape[1], device=dev, dtype=dt)
        acts_full = [torch.empty(rows, m.out_features, device=dev, dtype=dt) for m in lin]
        dins_full = [torch.empty(rows, m.in_features, device=dev, dtype=dt) for m in lin[1:]]
        minus_one_full = torch.full((rows, 1), -1.0, device=dev, dtype=dt)
        y_col = shuffled_y[:, None]
        total = torch.zeros((), dtype=torch.float64, device=dev)
        group = self.opt.param_groups[0]
        done = 0
        try:
            with torch.no_grad():
                for start in range(0, len(images), batch_size):
                    n = min(batch_size, len(images) - start)
                    if n == rows:
                        x, acts, dins, minus_one = x_full, acts_full, dins_full, minus_one_full
                    else:  # the last, smaller batch
                        x, minus_one = x_full[:n], minus_one_full[:n]
                        acts, dins = [a[:n] for a in acts_full], [d[:n] for d in dins_full]
                    torch.index_select(images, 0, perm[start : start + n], out=x)
                    inputs = [x]
                    for m, a, r in zip(lin, acts, relu, strict=True):
                        torch.addmm(m.bias, inputs[-1], m.weight.T, out=a)
                        if r:
                            a.clamp_min_(0)
                        inputs.append(a)
                    log_probs = torch.log_softmax(inputs[-1], dim=1)
                    y = shuffled_y[start : start + n]
                    total.add_(torch.nn.functional.nll_loss(log_probs, y, reduction="sum"))
                    dz = log_probs.exp_()  # the softmax, minus the one-hot label, over n
                    dz.scatter_add_(1, y_col[start : start + n], minus_one).div_(n)
                    for i in range(len(lin) - 1, -1, -1):
                        if relu[i]:  # relu' is 1 where the output is positive, else 0
                            torch.ops.aten.threshold_backward(dz, inputs[i + 1], 0, grad_input=dz)
                        torch.mm(dz.T, inputs[i], out=self.grads[2 * i])
                        torch.sum(dz, dim=0, out=self.grads[2 * i + 1])
                        if i > 0:
                            dz = torch.mm(dz, lin[i].weight, out=dins[i - 1])
                    self._update(group["lr"], group["alpha"], group["eps"])
                    done += 1
        finally:  # the optimizer's step counters, once per epoch (or up to a failure)
            torch._foreach_add_(self.steps, float(done))
        return total

    def _update(self, lr: float, alpha: float, eps: float) -> None:
        if self.use_adam_kernel:
            try:
                torch._fused_adam_(
                    self.params,
                    self.grads,
                    self.grads,  # first moment = 0 * g + 1 * g, written over g itself
                    self.square_avgs,
                    [],
                    self.saturated_steps,
                    lr=lr,
                    beta1=0.0,
                    beta2=alpha,
                    weight_decay=0.0,
                    eps=eps,
                    amsgrad=False,
                    maximize=False,
                )
                return
            except (RuntimeError, NotImplementedError, TypeError):
                # nothing is written before the kernel's argument checks fail
                self.use_adam_kernel = False
        v, g, s = self.square_avg_flat, self.grad_flat, self.scratch_flat
        v.mul_(alpha).addcmul_(g, g, value=1 - alpha)
        torch.sqrt(v, out=s)
        s.add_(eps)
        torch._foreach_addcdiv_(self.params, self.grads, self.scratch, value=-lr)


def preprocess(images: np.ndarray) -> np.ndarray:
    """§2.1 "Preparing the image data": reshape to (N, 784) and scale to float32 in [0, 1]."""
    if not isinstance(images, np.ndarray):
        raise TypeError(f"images must be a NumPy array, got {type(images).__name__}")
    if images.ndim != 3 or images.shape[1:] != (28, 28):
        raise ValueError(f"images must have shape (N, 28, 28), got {images.shape}")
    return images.reshape((len(images), 28 * 28)).astype("float32") / 255
