#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# Builds the kernels with no size threshold for threading and prints, per field size, the time of
# one update with 1 and 2 threads: where the speedup passes 1 is where MELISSA_PARALLEL_MIN_WORK
# (cpp/stats/tiling.hpp) belongs.
set -euo pipefail
cd "$(dirname "$0")/.."
build=build/bench-crossover
.venv/bin/cmake -S . -B "$build" -G Ninja -DCMAKE_MAKE_PROGRAM="$PWD/.venv/bin/ninja" \
  -DMELISSA_BUILD_PYTHON=OFF -DMELISSA_BUILD_FORTRAN=OFF -DMELISSA_BUILD_BENCH=ON \
  -DCMAKE_CXX_FLAGS=-DMELISSA_PARALLEL_MIN_WORK=0 > /dev/null
.venv/bin/cmake --build "$build" --target thread_crossover > /dev/null
"$build/bench/thread_crossover"
