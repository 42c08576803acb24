"""The opt-in compiled path of ``fit`` and ``train_first_example``: the book's step, compiled.

``torch.compile`` is applied to the training step exactly as the chapter writes it; the
``torch.autograd.grad`` (or ``loss.backward()``) call in the middle splits the compiled code
in two, and autograd runs between the halves, so weight hooks and frozen weights behave as
they do eagerly. Only public torch APIs are used:

- ``torch.compiler.reset()`` when a compiled run starts: compiled code is cached with guards
  that do not re-check module hooks, so a hook added after an earlier compiled run would
  otherwise never fire;
- ``mode="reduce-overhead"`` (CUDA graphs) on CUDA; the default mode elsewhere;
- a compile failure (no C++ compiler, an unsupported torch build...) surfaces at the first
  call, as whatever exception the backend raises: it is caught there, reported in one
  warning line, the model and optimizer are put back as they were, and the run goes on
  eagerly.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

__all__ = ["CompiledStep"]


class CompiledStep:
    """Calls ``torch.compile(step)``; falls back to ``step`` itself if compiling fails.

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
        torch.compiler.reset()
        mode = "reduce-overhead" if self.cuda else None
        self.compiled: Callable[..., torch.Tensor] | None = torch.compile(step, mode=mode)
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
            self.compiled = None
            lines = str(exc).strip().splitlines()
            reason = " ".join(lines[0].split())[:200] if lines else "no message"
            warnings.warn(
                f"torch.compile failed for {self.what} ({type(exc).__name__}: {reason}); "
                "running it eagerly",
                RuntimeWarning,
                stacklevel=3,
            )
            self.model.load_state_dict(model_state)
            if self.optimizer is not None and opt_state is not None:
                self.optimizer.load_state_dict(opt_state)
            return self.step(*args, **kwargs)

    def _run(self, fn: Callable[..., torch.Tensor], *args: Any, **kwargs: Any) -> torch.Tensor:
        if not self.cuda:
            return fn(*args, **kwargs)
        # CUDA graphs reuse their output memory on the next replay: keep a copy
        torch.compiler.cudagraph_mark_step_begin()  # type: ignore[no-untyped-call]
        return fn(*args, **kwargs).clone()
