"""The grade's default limits, shared by the runner, the pytest plugin and the course tools."""

from __future__ import annotations

#: Per-spec timeout in seconds, enforced from outside the worker. The slowest honest fast
#: spec takes about 1.6 s on the 2-core development machine (torch-cpu, first torch call
#: included); 30 s leaves room for a loaded machine, a first CUDA call and a slower
#: from-scratch implementation.
DEFAULT_SPEC_TIMEOUT = 30.0
#: Timeout of specs marked ``slow`` (training the first example on MNIST).
DEFAULT_SLOW_SPEC_TIMEOUT = 900.0
#: Budget of a whole grade, in seconds.
DEFAULT_BUDGET = 1800.0
#: Worker losses (crashes, timeouts) tolerated before a grade stops, incomplete.
DEFAULT_MAX_WORKER_RESTART = 10
#: Memory cap of the worker (RLIMIT_DATA, soft and hard), in GiB; 0 disables it.
DEFAULT_MEMORY_LIMIT_GIB = 8.0
