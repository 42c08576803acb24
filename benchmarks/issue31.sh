#!/usr/bin/env bash
# Issue 31's figures in one command: the bench's interleaved rounds (wall and CPU-time ratios
# to the GEMM floor, graph breaks, compile time, a fresh process's first compiled fit, the
# NumPy reference's grade time, peak memory), with the load average before and after.
# Usage: bash benchmarks/issue31.sh [extra dl-ch2 bench options]; writes bench-out/issue31/.
set -euo pipefail
cd "$(dirname "$0")/.."
DL_CH2="${DL_CH2:-.venv/bin/dl-ch2}"
[ -x "$DL_CH2" ] || DL_CH2=dl-ch2
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
/usr/bin/time -f "bench: %e s wall, %U s user, %S s sys (with children)" \
    "$DL_CH2" bench --repeats 3 --epochs 5 --out bench-out/issue31 "$@"
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
