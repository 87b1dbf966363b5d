#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# Loopback throughput of melissa's transport against raw ZeroMQ and .npy files: builds
# bench/transport_bench.cpp, then runs bench/transport_bench.py, which prints markdown for
# bench/RESULTS.md. Options go to the Python driver (--quick for a smoke test; --help).
set -euo pipefail
cd "$(dirname "$0")/.."
build=build/bench-transport
.venv/bin/cmake -S . -B "$build" -G Ninja -DCMAKE_MAKE_PROGRAM="$PWD/.venv/bin/ninja" \
  -DMELISSA_BUILD_PYTHON=OFF -DMELISSA_BUILD_FORTRAN=OFF -DMELISSA_BUILD_BENCH=ON > /dev/null
.venv/bin/cmake --build "$build" --target transport_bench > /dev/null
exec .venv/bin/python bench/transport_bench.py --program "$build/bench/transport_bench" "$@"
