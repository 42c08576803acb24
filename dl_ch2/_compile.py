"""The opt-in compiled path of ``fit`` and ``train_first_example``: the book's step, compiled.

Two ways, chosen per fit (:func:`has_hooks`):

- a model without hooks, trained by the book's update (no optimizer, no gradient
  transform): :class:`FunctionalStep`, the step as one function of the weights
  (``torch.func.functional_call`` + ``torch.func.grad_and_value``, the update inside), so
  ``torch.compile`` makes one graph of the whole step, forward, backward and update;
- otherwise the chapter's step itself, compiled: autograd (``torch.autograd.grad`` or
  ``loss.backward()``) splits it, so weight hooks and frozen weights behave as eagerly.

Compile once (:func:`compiled`): one ``torch.compile`` wrapper per step, model structure,
dtype and device is kept for the process, so a second fit reuses what the first compiled
(torch's guards recompile on their own when shapes or types change). Compiled code does not
re-check module hooks, so the hooks each wrapper was compiled with are recorded (the keys of
the model's hook dictionaries) and a change found at the next fit calls
``torch.compiler.reset()`` and compiles again. ``mode="reduce-overhead"`` (CUDA graphs) on
CUDA, the default elsewhere. A compile failure surfaces at the first call as whatever the
backend raises: one warning line, the model and optimizer put back, the run goes on eagerly.
"""

from __future__ import annotations

import contextlib
import copy
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import nn

__all__ = [
    "CompiledStep",
    "FunctionalStep",
    "compiled",
    "has_hooks",
    "hook_signature",
    "use_backend",
]

#: What ``torch.compile`` is given as its backend (a test may put a counting one here).
BACKEND: str | Callable[..., Any] = "inductor"
#: At most this many model structures per step are kept before starting over (torch's
#: own recompile limit per function is 8; a last, shorter batch costs one more).
MAX_KEPT = 3
#: (step, structure, backend, mode) -> (the wrapper, the hooks it was compiled with).
_KEPT: dict[tuple[Any, ...], tuple[Callable[..., Any], tuple[Any, ...]]] = {}

_HOOK_DICTS = (
    "_forward_hooks",
    "_forward_pre_hooks",
    "_backward_hooks",
    "_backward_pre_hooks",
)
_GLOBAL_HOOK_DICTS = (
    "_global_forward_hooks",
    "_global_forward_pre_hooks",
    "_global_backward_hooks",
    "_global_backward_pre_hooks",
)


def hook_signature(model: nn.Module) -> tuple[Any, ...]:
    """Every hook that can touch a step of ``model``, by its handle's key: the modules'
    forward/backward hooks, the parameters' tensor hooks and the global module hooks.

    Read from the hook dictionaries (``torch.nn.Module`` lists them nowhere publicly); the
    keys are unique per registration, so adding or removing one changes the signature.
    """
    modules = tuple(
        (name, attr, tuple(getattr(m, attr, None) or ()))
        for name, m in model.named_modules()
        for attr in _HOOK_DICTS
        if getattr(m, attr, None)
    )
    params = tuple(
        (name, attr, tuple(getattr(p, attr, None) or ()))
        for name, p in model.named_parameters()
        for attr in ("_backward_hooks", "_post_accumulate_grad_hooks")
        if getattr(p, attr, None)
    )
    module_mod = torch.nn.modules.module
    global_ = tuple(
        (attr, tuple(getattr(module_mod, attr, None) or ()))
        for attr in _GLOBAL_HOOK_DICTS
        if getattr(module_mod, attr, None)
    )
    return modules + params + global_


def has_hooks(model: nn.Module) -> bool:
    """Whether any hook (:func:`hook_signature`) is registered on or around ``model``."""
    return bool(hook_signature(model))


def _structure(model: nn.Module) -> tuple[Any, ...]:
    """Module types by name, and each parameter's and buffer's shape, dtype, device."""
    types = tuple((name, type(m).__qualname__) for name, m in model.named_modules())
    tensors = tuple(
        (name, tuple(t.shape), t.dtype, str(t.device), t.requires_grad)
        for name, t in (*model.named_parameters(), *model.named_buffers())
    )
    return types + tensors


def compiled(step: Callable[..., Any], model: nn.Module, mode: str | None) -> Callable[..., Any]:
    """``torch.compile(step, mode=mode)``, kept per step, ``model``'s structure, backend and
    mode; compiled again (after ``torch.compiler.reset()``) when ``model``'s hooks changed."""
    name = getattr(step, "__qualname__", id(step))
    key = (name, _structure(model), id(BACKEND), mode)
    hooks = hook_signature(model)
    kept = _KEPT.get(key)
    if kept is not None and kept[1] == hooks:
        return kept[0]
    same_step = [h for k, (_, h) in _KEPT.items() if k[0] == name]
    # torch's cache of this step's code holds what was traced with other hooks, and its
    # guards do not look at hooks: start over (also before torch's recompile limit)
    if any(h != hooks for h in same_step) or len(same_step) >= MAX_KEPT:
        torch.compiler.reset()
        _KEPT.clear()
    wrapper: Callable[..., Any] = torch.compile(step, mode=mode, backend=BACKEND)
    _KEPT[key] = (wrapper, hooks)
    return wrapper


@contextlib.contextmanager
def use_backend(backend: str | Callable[..., Any]) -> Iterator[None]:
    """Compile with ``backend`` inside the block (a counting callable, say: the bench counts
    graph breaks so); torch's compiled code and the kept wrappers are dropped on the way in
    and on the way out, so nothing compiled by one backend runs under the other."""
    global BACKEND
    saved = BACKEND
    torch.compiler.reset()
    _KEPT.clear()
    BACKEND = backend
    try:
        yield
    finally:
        torch.compiler.reset()
        _KEPT.clear()
        BACKEND = saved


def forget(step: Callable[..., Any]) -> None:
    """Drop every kept wrapper of ``step`` (after it failed to compile)."""
    name = getattr(step, "__qualname__", id(step))
    for key in [k for k in _KEPT if k[0] == name]:
        del _KEPT[key]


class FunctionalStep:
    """The book's step as one function of the trainable weights: forward, mean loss,
    ``grad_and_value`` and ``w -= learning_rate * g``, all inside one compiled graph.

    The weights go in as detached aliases (same storage, no autograd history), so the
    in-place update inside the graph updates the model's parameters themselves. Only for a
    model without hooks (the parameters it differentiates are the aliases, whose tensor
    hooks are not the parameters').
    """

    def __init__(
        self,
        model: nn.Module,
        weights: Sequence[torch.Tensor],
        learning_rate: float,
        loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    ) -> None:
        trainable = {id(w) for w in weights}
        named = dict(model.named_parameters())
        self.trained = {n: p.detach() for n, p in named.items() if id(p) in trainable}
        self.rest = {n: p.detach() for n, p in named.items() if id(p) not in trainable}
        self.rest.update(dict(model.named_buffers()))
        self.model, self.learning_rate, self.loss = model, learning_rate, loss

    def __call__(self, images_batch: torch.Tensor, labels_batch: torch.Tensor) -> torch.Tensor:
        return self.calling(functional_book_step)(images_batch, labels_batch)

    def calling(self, fn: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
        """``loss = step(x, y)`` through ``fn`` (:func:`functional_book_step`, compiled)."""

        def step(images_batch: torch.Tensor, labels_batch: torch.Tensor) -> torch.Tensor:
            return fn(
                self.model,
                self.trained,
                self.rest,
                images_batch,
                labels_batch,
                self.learning_rate,
                self.loss,
            )

        return step


def functional_book_step(
    model: nn.Module,
    trained: dict[str, torch.Tensor],
    rest: dict[str, torch.Tensor],
    images_batch: torch.Tensor,
    labels_batch: torch.Tensor,
    learning_rate: float,
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
) -> torch.Tensor:
    """§2.5.2's step on explicit weights: what :class:`FunctionalStep` compiles."""

    def average_loss(weights: dict[str, torch.Tensor]) -> torch.Tensor:
        predictions = torch.func.functional_call(model, (weights, rest), (images_batch,))
        return loss(predictions, labels_batch).mean()

    value: torch.Tensor
    gradients, value = torch.func.grad_and_value(average_loss)(trained)
    with torch.no_grad():
        for name, g in gradients.items():
            trained[name].sub_(g, alpha=learning_rate)  # the book's w.assign_sub(g * lr)
    return value.detach()


class CompiledStep:
    """Calls the kept ``torch.compile(step)`` (:func:`compiled`); falls back to ``step``
    itself if compiling fails.

    ``model`` and ``optimizer`` are what the step mutates: they are snapshotted before the
    first compiled call and restored if it fails, so the eager retry starts from the same
    weights.
    """

    def __init__(
        self,
        step: Callable[..., torch.Tensor],
        model: nn.Module,
        optimizer: torch.optim.Optimizer | None,
        device: torch.device,
        what: str,
    ) -> None:
        self.step = step
        self.model = model
        self.optimizer = optimizer
        self.what = what
        self.cuda = device.type == "cuda"
        mode = "reduce-overhead" if self.cuda else None
        self.compiled: Callable[..., torch.Tensor] | None
        if isinstance(step, FunctionalStep):
            self.compiled = step.calling(compiled(functional_book_step, model, mode))
        else:
            self.compiled = compiled(step, model, mode)
        self.first = True

    def __call__(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        if self.compiled is None:
            return self.step(*args, **kwargs)
        if not self.first:
            return self._run(self.compiled, *args, **kwargs)
        self.first = False
        model_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        opt_state = (
            copy.deepcopy(self.optimizer.state_dict()) if self.optimizer is not None else None
        )
        try:
            return self._run(self.compiled, *args, **kwargs)
        except Exception as exc:  # any backend failure: the type is the backend's own
            self._fall_back(exc)
            self.model.load_state_dict(model_state)
            if self.optimizer is not None and opt_state is not None:
                self.optimizer.load_state_dict(opt_state)
            return self.step(*args, **kwargs)

    def _fall_back(self, exc: Exception) -> None:
        self.compiled = None
        forget(functional_book_step if isinstance(self.step, FunctionalStep) else self.step)
        lines = str(exc).strip().splitlines()
        reason = " ".join(lines[0].split())[:200] if lines else "no message"
        warnings.warn(
            f"torch.compile failed for {self.what} ({type(exc).__name__}: {reason}); "
            "running it eagerly",
            RuntimeWarning,
            stacklevel=4,
        )

    def _run(self, fn: Callable[..., torch.Tensor], *args: Any, **kwargs: Any) -> torch.Tensor:
        if not self.cuda:
            return fn(*args, **kwargs)
        # CUDA graphs reuse their output memory on the next replay: keep a copy
        torch.compiler.cudagraph_mark_step_begin()  # type: ignore[no-untyped-call]
        return fn(*args, **kwargs).clone()
