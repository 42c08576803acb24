"""Data-parallel training on ``torch.distributed``, exact to the single-process step.

Not in the chapter, but built on its one fact that makes it exact: §2.5.2's training loss
is a *mean* over the batch, so the gradient of a global batch of ``N`` samples split into
contiguous shards of ``n_r`` samples is the size-weighted sum of the shards' gradients::

    grad(mean over N) = sum_r (n_r / N) * grad(mean over shard r)

Every rank draws the same batches (the same ``BatchGenerator`` order and seed), takes its
contiguous shard of each global batch (:func:`shard_bounds`: 128 samples on 3 ranks are
43/43/42; a last batch of 1 sample on 3 ranks leaves two ranks an *empty* shard), computes
its shard's gradient with the book's step, and the weighted gradients are summed with one
``all_reduce(SUM)``. An empty shard contributes zeros (never the NaN of a mean over zero
samples). Every rank then applies the same update to the same weights, so the weights stay
identical on every rank and equal to one process's at the same global batch size, up to
rounding.

Each step costs two ``all_reduce`` calls: the gradients as one flat buffer, and the
batch's mean loss (one scalar), so every rank logs, checks and records the same loss.

Why not ``DistributedDataParallel``: the book's step takes its gradients with
``torch.autograd.grad``, which DDP does not synchronise (DDP all-reduces only what
``backward()`` accumulates into ``.grad``), and DDP averages over ranks, which is the
batch's gradient only for equal shards. The first example's step (``backward()`` and
RMSprop's ``opt.step()``) could use DDP with its loss scaled by ``world * n_r / N``; it
uses the same explicit all-reduce instead (:meth:`DataParallel.wrap`), so both trainings
share one exact rule and one code path, the step is the chapter's own
``first_example_step``, and the model is not wrapped (its type and ``state_dict`` keys
are unchanged).

Launch with ``torchrun`` (gloo on CPU, NCCL on CUDA); :func:`init_from_env` joins the
process group it describes with a short collective timeout (``DL_CH2_DIST_TIMEOUT``
seconds, 60 by default; gloo's own default is 30 minutes), so a rank that dies ends the
job within that time instead of hanging it. Each rank also watches its launcher: when
``torchrun`` itself dies (SIGKILL, a closed terminal), the rank notices within a fraction of
a second, says so on stderr and stops itself with SIGTERM (the main job turns that into
``StoppedBySignal``: nothing is marked complete), and is killed outright if it has not ended
``PARENT_GRACE_S`` seconds later: an orphaned rank never goes on writing a run.
"""

from __future__ import annotations

import datetime
import math
import os
import re
import signal
import sys
import threading
from collections.abc import Sequence

import torch
import torch.distributed as dist

from dl_ch2._checks import require_tensor
from dl_ch2._steps import BatchStep, GradientTransform, ShardStep

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "TIMEOUT_ENV",
    "DataParallel",
    "DistributedError",
    "broadcast_weights",
    "check_weights_identical",
    "get_rank",
    "get_world_size",
    "init_from_env",
    "is_distributed",
    "is_rank0",
    "launched_by_torchrun",
    "shard_bounds",
    "shutdown",
    "timeout_from_env",
]

#: Collective timeout in seconds when neither an argument nor ``DL_CH2_DIST_TIMEOUT`` sets it.
DEFAULT_TIMEOUT_S = 60.0
#: Environment variable holding the collective timeout in seconds.
TIMEOUT_ENV = "DL_CH2_DIST_TIMEOUT"

_TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


class DistributedError(RuntimeError):
    """Data-parallel training cannot start or go on (no process group, ranks disagree)."""


def _check_timeout(timeout_s: object, name: str) -> float:
    if isinstance(timeout_s, bool) or not isinstance(timeout_s, (int, float)):
        raise TypeError(f"{name} must be a number of seconds, got {type(timeout_s).__name__}")
    value = float(timeout_s)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive, finite number of seconds, got {timeout_s}")
    return value


def timeout_from_env(default: float = DEFAULT_TIMEOUT_S) -> float:
    """The collective timeout in seconds: ``$DL_CH2_DIST_TIMEOUT`` if set, else ``default``."""
    raw = os.environ.get(TIMEOUT_ENV)
    if raw is None or raw.strip() == "":
        return _check_timeout(default, "default")
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{TIMEOUT_ENV}={raw!r} is not a number of seconds") from None
    return _check_timeout(value, TIMEOUT_ENV)


def launched_by_torchrun() -> bool:
    """True when the environment describes a process group (``torchrun`` sets these)."""
    return all(os.environ.get(k) for k in _TORCHRUN_ENV)


#: Seconds between two looks of a rank at its launcher; seconds it has to stop after it.
PARENT_POLL_S, PARENT_GRACE_S = 0.2, 10.0


def _watch_parent(launcher: int) -> None:
    """Stop this rank when its launcher (torchrun's agent, pid ``launcher``) is gone."""
    tick = threading.Event()  # never set: its wait is the watch's clock
    while os.getppid() == launcher:
        tick.wait(PARENT_POLL_S)
    rank = os.environ.get("RANK", "?")
    print(f"dl-ch2: rank {rank}: its launcher (torchrun, pid {launcher}) died; stopping",
          file=sys.stderr, flush=True)  # fmt: skip
    os.kill(os.getpid(), signal.SIGTERM)
    tick.wait(PARENT_GRACE_S)
    os.kill(os.getpid(), signal.SIGKILL)  # still running: a collective holds it, end it here


def init_from_env(*, timeout_s: float | None = None, backend: str | None = None) -> bool:
    """Join the process group ``torchrun`` describes; returns whether one is joined.

    Without torchrun's variables (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``,
    ``MASTER_PORT``) it does nothing and returns False: the caller trains in one process.
    ``backend`` defaults to NCCL where CUDA is present, else gloo; with NCCL the current
    CUDA device becomes ``cuda:$LOCAL_RANK``. ``timeout_s`` (default
    :func:`timeout_from_env`) bounds every collective, so a dead peer ends the job.
    Calling it again once joined returns True.
    """
    if dist.is_available() and dist.is_initialized():
        return True
    timeout = timeout_from_env() if timeout_s is None else _check_timeout(timeout_s, "timeout_s")
    if not launched_by_torchrun():
        return False
    if not dist.is_available():
        raise DistributedError("this torch build has no torch.distributed support")
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() and dist.is_nccl_available() else "gloo"
    if backend not in ("gloo", "nccl"):
        raise ValueError(f"backend must be 'gloo' or 'nccl', got {backend!r}")
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    watch = threading.Thread(target=_watch_parent, args=(os.getppid(),), daemon=True)
    watch.start()  # a killed torchrun leaves no orphaned rank writing
    dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout))
    return True


def is_distributed() -> bool:
    """True once a process group is joined."""
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    """This process's rank, 0 outside a process group."""
    return dist.get_rank() if is_distributed() else 0


def get_world_size() -> int:
    """Number of processes, 1 outside a process group."""
    return dist.get_world_size() if is_distributed() else 1


def is_rank0() -> bool:
    """The one process that prints, logs and writes files."""
    return get_rank() == 0


def shutdown() -> None:
    """Leave the process group, if one is joined, after every rank has reached this point.

    The barrier keeps a rank from tearing its connections down while a peer still uses
    them (gloo can abort a process whose peer left first).
    """
    if is_distributed():
        dist.barrier()
        dist.destroy_process_group()


def shard_bounds(global_size: int, rank: int, world_size: int) -> tuple[int, int]:
    """``(start, stop)`` of ``rank``'s contiguous shard of a batch of ``global_size``.

    The first ``global_size % world_size`` ranks take one sample more: 128 on 3 ranks is
    43/43/42, 1 on 3 ranks is 1/0/0 (empty shards are allowed).
    """
    for name, value in (("global_size", global_size), ("rank", rank), ("world_size", world_size)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must lie in [0, {world_size}), got {rank}")
    if global_size < 0:
        raise ValueError(f"global_size must be >= 0, got {global_size}")
    base, extra = divmod(global_size, world_size)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


def _flat(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    if not tensors:
        raise ValueError("got no tensors to combine")
    return torch.cat([t.detach().reshape(-1) for t in tensors])


def broadcast_weights(weights: Sequence[torch.Tensor], src: int = 0) -> None:
    """Copy rank ``src``'s values into ``weights`` on every rank, in place (one broadcast)."""
    _require_group()
    weights = list(weights)
    flat = _flat(weights)
    dist.broadcast(flat, src=src)
    with torch.no_grad():
        offset = 0
        for w in weights:
            w.copy_(flat[offset : offset + w.numel()].view_as(w))
            offset += w.numel()


def check_weights_identical(weights: Sequence[torch.Tensor]) -> None:
    """Raise :class:`DistributedError` on every rank unless all ranks hold rank 0's weights.

    Bit-for-bit: rank 0's weights are broadcast and compared with ``torch.equal``, and the
    verdicts are all-reduced, so every rank reaches the same conclusion.
    """
    _require_group()
    flat = _flat(list(weights))
    reference = flat.clone()
    dist.broadcast(reference, src=0)
    verdict = torch.zeros(dist.get_world_size(), dtype=torch.int64, device=flat.device)
    verdict[dist.get_rank()] = 0 if torch.equal(flat, reference) else 1
    dist.all_reduce(verdict, op=dist.ReduceOp.SUM)
    bad = [r for r, v in enumerate(verdict.tolist()) if v]
    if bad:
        raise DistributedError(f"weights on rank(s) {bad} differ from rank 0's")


def _require_group() -> None:
    if not is_distributed():
        raise DistributedError(
            "torch.distributed has no process group: launch with torchrun and call "
            "dl_ch2.distributed.init_from_env() first"
        )


class DataParallel:
    """This process's part in data-parallel training (one instance per process).

    :meth:`wrap` turns a chapter step (§2.5.2's, bound by ``fit``; §2.1's, bound by
    ``train_first_example``) into the same step on this rank's shard of the *global* batch
    (every rank passes the same one), with the gradients combined across ranks; it returns
    the global batch's mean loss, identical on every rank. ``steps`` and
    ``bytes_all_reduced`` count the steps and the bytes each rank contributed to
    all-reduces (gradients and loss).
    """

    def __init__(self) -> None:
        _require_group()
        self.rank = dist.get_rank()
        self.world_size = dist.get_world_size()
        self.steps = 0
        self.bytes_all_reduced = 0

    def shard(
        self, images_batch: torch.Tensor, labels_batch: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """This rank's contiguous slice of a global batch (possibly empty)."""
        require_tensor("images_batch", images_batch)
        require_tensor("labels_batch", labels_batch)
        if len(images_batch) != len(labels_batch):
            raise ValueError(
                f"images_batch has {len(images_batch)} samples but labels_batch {len(labels_batch)}"
            )
        start, stop = shard_bounds(len(images_batch), self.rank, self.world_size)
        return images_batch[start:stop], labels_batch[start:stop]

    def _combine(
        self, tensors: Sequence[torch.Tensor], shard_size: int, global_size: int
    ) -> list[torch.Tensor]:
        """``sum_r (n_r / N) * t_r`` over ranks for each tensor, in one all-reduce."""
        tensors = list(tensors)
        flat = _flat(tensors)
        if shard_size == 0:
            flat.zero_()  # an empty shard adds nothing, not the NaN of a mean over 0 samples
        else:
            flat.mul_(shard_size / global_size)
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        self.bytes_all_reduced += flat.numel() * flat.element_size()
        out: list[torch.Tensor] = []
        offset = 0
        for t in tensors:
            out.append(flat[offset : offset + t.numel()].view_as(t))
            offset += t.numel()
        return out

    def gradient_transform(
        self, shard_size: int, global_size: int, then: GradientTransform | None = None
    ) -> GradientTransform:
        """The ``gradient_transform`` for the steps: the weighted all-reduce (then ``then``)."""

        def transform(gradients: list[torch.Tensor]) -> list[torch.Tensor]:
            combined = self._combine(gradients, shard_size, global_size)
            return combined if then is None else list(then(combined))

        return transform

    def mean_loss(self, loss: torch.Tensor, shard_size: int, global_size: int) -> torch.Tensor:
        """The global batch's mean loss from each rank's shard mean (an empty shard adds 0)."""
        return self._combine([loss.reshape(())], shard_size, global_size)[0]

    def wrap(self, step: ShardStep, weights: Sequence[torch.Tensor]) -> BatchStep:
        """``step`` on this rank's shard of each global batch, gradients all-reduced.

        ``step(images_batch, labels_batch, transform)`` is a chapter step bound to its
        model and optimizer that maps its gradients with ``transform`` before the update:
        here the weighted all-reduce, so every rank applies the global batch's gradient.
        ``weights`` (what the step updates) start from rank 0's values, as DDP does.
        """
        weights = list(weights)
        broadcast_weights(weights)

        def data_parallel_step(
            images_batch: torch.Tensor,
            labels_batch: torch.Tensor,
            transform: GradientTransform | None = None,
        ) -> torch.Tensor:
            self.steps += 1
            x, y = self.shard(images_batch, labels_batch)
            n, global_size = len(x), len(images_batch)
            loss = step(x, y, self.gradient_transform(n, global_size, transform))
            return self.mean_loss(loss, n, global_size)

        return data_parallel_step

    def bytes_per_step(self) -> float:
        """Bytes this rank all-reduced per training step (gradients and loss), on average."""
        return self.bytes_all_reduced / self.steps if self.steps else 0.0


def describe(exc: BaseException) -> str:
    """The first line of an error, for one-line reports."""
    lines = str(exc).strip().splitlines()
    # gloo prefixes its messages with the C++ source location: drop it
    text = re.sub(r"^\[[^\]]*\.(cc|cpp|h):\d+\]\s*", "", lines[0]) if lines else ""
    return f"{type(exc).__name__}: {text[:300]}" if text else type(exc).__name__
