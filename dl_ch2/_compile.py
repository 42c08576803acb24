"""The opt-in compiled path of ``fit`` and ``train_first_example``: the book's step, compiled.

Two ways, chosen per fit (:func:`look_at_hooks`):

- a model without hooks, trained by the book's update (no optimizer, no gradient
  transform): :class:`FunctionalStep`, the step as one function of the weights
  (``torch.func.functional_call`` + ``torch.func.grad_and_value``, the update inside), so
  ``torch.compile`` makes one graph of the whole step, forward, backward and update;
- otherwise the chapter's step itself, compiled: autograd (``torch.autograd.grad`` or
  ``loss.backward()``) splits it, so weight hooks and frozen weights behave as eagerly.

Compile once (:func:`compiled`): one ``torch.compile`` wrapper per step, model structure,
dtype and device is kept for the process, so a second fit reuses what the first compiled
(torch's guards recompile on their own when shapes or types change). torch's compiled code
does not notice a hook added to a module that had none, so hooks are looked at with public
API only: every ``register_*hook`` returns a ``torch.utils.hooks.RemovableHandle``, whose
class counts registrations (``RemovableHandle.next_id``). A kept wrapper is reused only if
no hook was registered anywhere since it was made; otherwise the step is traced afresh (a
copy of its function, so torch's cache for it starts empty, and nothing else the process
compiled is dropped). A hook removed since is torch's own to notice: its guards check a
module's non-empty hook dictionaries. Whether ``model`` has hooks (the route above) is
found the same public way: a no-op hook is registered beside any others and removed, and
its handle's dictionary says how many others there are. ``mode="reduce-overhead"`` (CUDA
graphs) on CUDA, the default elsewhere. A compile failure surfaces at the first call as
whatever the backend raises: one warning line, the model and optimizer put back, the run
goes on eagerly.
"""

from __future__ import annotations

import contextlib
import copy
import types
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

__all__ = [
    "CompiledStep",
    "FunctionalStep",
    "HookLook",
    "compiled",
    "look_at_hooks",
    "use_backend",
]

#: What ``torch.compile`` is given as its backend (a test may put a counting one here).
BACKEND: str | Callable[..., Any] = "inductor"
#: At most this many model structures per step are kept (the oldest is dropped first).
MAX_KEPT = 3
#: (step, structure, backend, mode) -> (the wrapper, the registration count it was made at,
#: :attr:`HookLook.registered`).
_KEPT: dict[tuple[Any, ...], tuple[Callable[..., Any], int]] = {}


@dataclass(frozen=True)
class HookLook:
    """What :func:`look_at_hooks` saw: whether ``model`` has hooks, and how many hooks the
    process had registered by then, not counting the looks' own no-op ones."""

    found: bool
    registered: int


#: How many registrations the looks themselves made (their no-op hooks).
_LOOKS_REGISTERED = 0


def _no_op(*_args: Any) -> None:
    return None


def _others(handle: RemovableHandle) -> int:
    """How many hooks share the dictionary that ``handle``'s no-op hook went into; the
    no-op is removed on the way out."""
    with handle:
        hooks = handle.hooks_dict_ref()
        return 0 if hooks is None else len(hooks) - 1


def look_at_hooks(model: nn.Module) -> HookLook:
    """Whether a hook that a compiled step could miss is registered on ``model`` (forward,
    forward-pre and backward-pre hooks of its modules, tensor hooks of its trainable
    weights) or for every module (the global forward, forward-pre and backward-pre hooks).

    Public API only: a no-op hook is registered through the same ``register_*`` function,
    its handle's dictionary counted, and the no-op removed. (Modules' backward hooks are
    not probed: registering one changes which kind the module accepts afterwards. They
    make ``torch.func`` refuse the one-graph step, which then runs the chapter's step.)
    """
    global _LOOKS_REGISTERED
    before = RemovableHandle.next_id
    module_hooks = torch.nn.modules.module
    registers: list[Callable[[Callable[..., None]], RemovableHandle]] = [
        module_hooks.register_module_forward_pre_hook,
        module_hooks.register_module_forward_hook,
        module_hooks.register_module_full_backward_pre_hook,
    ]
    for m in model.modules():
        registers += [
            m.register_forward_pre_hook,
            m.register_forward_hook,
            m.register_full_backward_pre_hook,
        ]
    registers += [w.register_hook for w in model.parameters() if w.requires_grad]
    # every probe runs (and is removed) even after one found a hook: no short-circuit
    found = sum(_others(register(_no_op)) for register in registers) > 0
    _LOOKS_REGISTERED += RemovableHandle.next_id - before
    return HookLook(found, RemovableHandle.next_id - _LOOKS_REGISTERED)


def _structure(model: nn.Module) -> tuple[Any, ...]:
    """Module types by name, and each parameter's and buffer's shape, dtype, device."""
    types_ = tuple((name, type(m).__qualname__) for name, m in model.named_modules())
    tensors = tuple(
        (name, tuple(t.shape), t.dtype, str(t.device), t.requires_grad)
        for name, t in (*model.named_parameters(), *model.named_buffers())
    )
    return types_ + tensors


def _fresh(step: Callable[..., Any]) -> Callable[..., Any]:
    """A copy of the function ``step`` with its own code object: torch.compile keeps its
    compiled code per code object, so the copy is traced afresh (with today's hooks) while
    inductor's caches still serve the kernels. Other callables are returned as they are."""
    if not isinstance(step, types.FunctionType):
        return step
    copied = types.FunctionType(
        step.__code__.replace(),
        step.__globals__,
        step.__name__,
        step.__defaults__,
        step.__closure__,
    )
    copied.__kwdefaults__ = step.__kwdefaults__
    copied.__qualname__ = step.__qualname__
    return copied


def compiled(
    step: Callable[..., Any], model: nn.Module, mode: str | None, look: HookLook
) -> Callable[..., Any]:
    """``torch.compile(step, mode=mode)``, kept per step, ``model``'s structure, backend and
    mode, and reused while no hook has been registered since it was made (``look``: the
    count when this fit looked at ``model``'s hooks); traced afresh otherwise."""
    name = getattr(step, "__qualname__", id(step))
    key = (name, _structure(model), id(BACKEND), mode)
    kept = _KEPT.pop(key, None)
    if kept is not None and kept[1] == look.registered:
        _KEPT[key] = kept  # the most recently used last
        return kept[0]
    same_step = [k for k in _KEPT if k[0] == name]
    for old in same_step[: max(0, len(same_step) - MAX_KEPT + 1)]:
        del _KEPT[old]
    wrapper: Callable[..., Any] = torch.compile(_fresh(step), mode=mode, backend=BACKEND)
    _KEPT[key] = (wrapper, look.registered)
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
    model without hooks (:func:`look_at_hooks`: the parameters it differentiates are the
    aliases, whose tensor hooks are not the parameters').
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
    """Calls the kept ``torch.compile(step)`` (:func:`compiled`); falls back to
    ``fallback`` (``step`` itself unless given) if compiling fails.

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
        look: HookLook | None = None,
        fallback: Callable[..., torch.Tensor] | None = None,
    ) -> None:
        self.step = step if fallback is None else fallback
        self.model = model
        self.optimizer = optimizer
        self.what = what
        self.cuda = device.type == "cuda"
        mode = "reduce-overhead" if self.cuda else None
        self.compiled: Callable[..., torch.Tensor] | None
        look = look_at_hooks(model) if look is None else look
        self.kept_as: Callable[..., Any] = step
        if isinstance(step, FunctionalStep):
            self.kept_as = functional_book_step
            self.compiled = step.calling(compiled(functional_book_step, model, mode, look))
        else:
            self.compiled = compiled(step, model, mode, look)
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
        forget(self.kept_as)
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
