#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
#
#     examples/heat/build.sh BUILD_DIR
#
# Configures and builds heat_c and heat_fortran into BUILD_DIR against the melissa installed in
# the repository's .venv, with the venv's cmake and ninja. Quiet on success; on failure, prints
# the failing step's output.
set -euo pipefail

if [ $# -ne 1 ]; then
  echo "usage: $0 BUILD_DIR" >&2
  exit 2
fi
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
venv=$here/../../.venv
build=$1
mkdir -p "$build"
log=$build/build.log

run() {
  "$@" > "$log" 2>&1 || { cat "$log" >&2; exit 1; }
}
melissa_dir=$("$venv/bin/python" -m melissa --cmakedir)
run "$venv/bin/cmake" -S "$here" -B "$build" -G Ninja \
  -DCMAKE_MAKE_PROGRAM="$(cd "$venv/bin" && pwd)/ninja" -DMelissa_DIR="$melissa_dir"
run "$venv/bin/cmake" --build "$build"
# The demos' grid (--nx 21 --ny 21), the coordinates of their results.nc.
run "$venv/bin/python" "$here/grid.py" 21 21 "$build/grid-21x21.nc"
