"""Fault injection for the data-parallel tests: a rank that dies or hangs mid-run.

Test scaffolding, kept out of the port: :func:`install` patches
``dl_ch2.distributed.DataParallel.wrap`` in this process so that, when
``$DL_CH2_TEST_EXIT_AT_STEP`` names this rank, the wrapped step ``os._exit(FAULT_EXIT_CODE)``s
just before its step number STEP (``"RANK:STEP"``, counted from 0 over the whole run), or
sleeps there (``"RANK:STEP:hang"``) so that its peers' collectives time out.

``python tests/fault_injection.py train ...`` is ``dl-ch2 train ...`` with the patch
installed (what the CLI tests launch under torchrun).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence

import torch

from dl_ch2 import distributed
from dl_ch2._steps import BatchStep, ShardStep

FAULT_ENV = "DL_CH2_TEST_EXIT_AT_STEP"
FAULT_EXIT_CODE = 17
#: A file the hanging rank creates when its hang begins.
HANG_FLAG_ENV = "DL_CH2_TEST_HANG_FLAG"


def fault_from_env(rank: int) -> tuple[int, bool] | None:
    """(step, hang) at which ``rank`` must fail, from ``$DL_CH2_TEST_EXIT_AT_STEP``."""
    raw = os.environ.get(FAULT_ENV)
    if not raw:
        return None
    parts = raw.split(":")
    try:
        if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] != "hang"):
            raise ValueError
        fault_rank, step = int(parts[0]), int(parts[1])
    except ValueError:
        raise ValueError(f"{FAULT_ENV}={raw!r} must be RANK:STEP or RANK:STEP:hang") from None
    return (step, len(parts) == 3) if fault_rank == rank else None


def install() -> None:
    """Make this process's data-parallel steps fail as ``$DL_CH2_TEST_EXIT_AT_STEP`` says."""
    original = distributed.DataParallel.wrap

    def wrap(
        self: distributed.DataParallel, step: ShardStep, weights: Sequence[torch.Tensor]
    ) -> BatchStep:
        inner = original(self, step, weights)
        fault = fault_from_env(self.rank)

        def faulty(images_batch: torch.Tensor, labels_batch: torch.Tensor) -> torch.Tensor:
            if fault is not None and self.steps == fault[0]:
                if fault[1]:
                    flag = os.environ.get(HANG_FLAG_ENV)
                    if flag:  # tells the test the hang has begun
                        open(flag, "w").close()
                    time.sleep(3600)
                os._exit(FAULT_EXIT_CODE)
            return inner(images_batch, labels_batch)

        return faulty

    distributed.DataParallel.wrap = wrap  # type: ignore[method-assign]


if __name__ == "__main__":
    from dl_ch2_tools.cli import main

    install()
    sys.exit(main(sys.argv[1:]))
