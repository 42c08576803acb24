"""The sandbox's own pieces: the worker's library copy, uid leases, limits (run as root)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conformance.grading import sandbox

ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="needs a grader running as root")


def test_a_library_folder_someone_else_could_write_is_never_imported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DL_CH2_WORKER_SITE", raising=False)
    cache = tmp_path / "cache"
    site = Path(sandbox.worker_site(["numpy"], cache=cache))
    assert (site / "numpy" / "__init__.py").is_file()
    assert sandbox.worker_site(["numpy"], cache=cache) == str(site)  # cached
    site.chmod(0o777)  # planted, or tampered with: writable by others
    with pytest.raises(RuntimeError, match="not this grader's own"):
        sandbox.worker_site(["numpy"], cache=cache)


@ROOT_ONLY
def test_two_grades_at_once_never_share_a_worker_uid() -> None:
    code = (
        "import sys, time; sys.path.insert(0, sys.argv[1]); "
        "from conformance.grading.sandbox import lease_uid; print(lease_uid(), flush=True); "
        "time.sleep(3)"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(Path(__file__).parents[1])],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    uids = [int(p.communicate(timeout=60)[0]) for p in procs]
    assert len(set(uids)) == 3 and all(u >= 61000 for u in uids), uids


def test_limits_are_hard_and_name_every_resource() -> None:
    limits = sandbox.Limits(cpu_s=10, memory_bytes=2**30).rlimits()
    assert set(limits) == {
        "RLIMIT_CPU",
        "RLIMIT_DATA",
        "RLIMIT_NOFILE",
        "RLIMIT_NPROC",
        "RLIMIT_FSIZE",
        "RLIMIT_CORE",
    }
    assert limits["RLIMIT_CORE"] == 0 and limits["RLIMIT_DATA"] == 2**30
