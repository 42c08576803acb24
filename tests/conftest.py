"""Shared fixtures: every device-generic test runs on CPU and, where present, CUDA."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    derandomize=True,
    deadline=None,
    max_examples=60,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("dev", deadline=None, max_examples=100)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

# the weights' signing key of this test run, never the user's own (issue 29); made once
# (xdist's workers inherit it) and removed when the process that made it exits
_KEY_DIRS: list[str] = []
if "DL_CH2_WEIGHTS_KEY" not in os.environ:
    _KEY_DIRS.append(tempfile.mkdtemp(prefix="dl-ch2-test-key-"))
    os.environ["DL_CH2_WEIGHTS_KEY"] = os.path.join(_KEY_DIRS[0], "weights.key")


def pytest_unconfigure(config: pytest.Config) -> None:
    import worker_shared  # its folder shared with workers, made in this process if at all

    for folder in [*_KEY_DIRS, *worker_shared._ROOT]:  # only in the process that made it
        shutil.rmtree(folder, ignore_errors=True)


DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=[
            pytest.mark.cuda,
            pytest.mark.skipif(
                not torch.cuda.is_available(), reason="no CUDA device on this machine"
            ),
        ],
    ),
]


@pytest.fixture(params=DEVICES)
def device(request: pytest.FixtureRequest) -> torch.device:
    return torch.device(request.param)


@pytest.fixture(params=[torch.float32, torch.float64], ids=["float32", "float64"])
def dtype(request: pytest.FixtureRequest) -> torch.dtype:
    return request.param


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture
def mnist_present() -> None:
    """Skip, with the reason, where the real MNIST files are not cached (`dl-ch2 data`)."""
    from dl_ch2_tools.mnist import MNISTError, load_mnist

    try:
        load_mnist(download=False)
    except (MNISTError, OSError) as exc:
        pytest.skip(f"MNIST not available locally (run `dl-ch2 data`): {str(exc)[:120]}")


ROOT = Path(__file__).resolve().parents[1]


def _sigterm_once_training(argv: list[str], env: dict[str, str] | None = None) -> tuple[int, str]:
    """Run ``python ARGV`` from the repository root; once it prints its first training loss
    (``loss at batch 0:``), send it SIGTERM; return its exit status and stderr."""
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", **(env or {})}
    proc = subprocess.Popen(
        [sys.executable, *argv],
        cwd=ROOT,
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if "loss at batch 0:" in line:
                break
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    return proc.returncode, stderr


@pytest.fixture
def sigterm_once_training() -> Callable[..., tuple[int, str]]:
    """``sigterm_once_training(argv, env=None) -> (status, stderr)``: SIGTERM mid-training."""
    return _sigterm_once_training
