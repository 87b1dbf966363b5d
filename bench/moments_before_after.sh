#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# Times Moments.update of the working tree against commit REV's (default HEAD), both compiled into
# bench/moments_before_after.cpp, which alternates them; prints a markdown table.
#
#   bench/moments_before_after.sh [REV]
set -euo pipefail
rev=${1:-HEAD}
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/before/melissa" "$work/include/melissa"
for file in include/melissa/stats.hpp cpp/stats/moments.cpp cpp/stats/threads.cpp \
  cpp/stats/tiling.hpp; do
  git -C "$root" show "$rev:$file" > "$work/before/$(basename "$file")"
done
mv "$work/before/stats.hpp" "$work/before/melissa/stats.hpp"
# Since the huge-page allocation moved to cpp/huge_pages.hpp, which moments.cpp includes as
# "../huge_pages.hpp".
if git -C "$root" cat-file -e "$rev:cpp/huge_pages.hpp" 2> /dev/null; then
  git -C "$root" show "$rev:cpp/huge_pages.hpp" > "$work/huge_pages.hpp"
fi
# CMake generates the export header; one program made of the objects needs no visibility.
printf '#pragma once\n#define MELISSA_STATS_EXPORT\n' > "$work/include/melissa/stats_export.h"
cxx=(${CXX:-g++} -O3 -DNDEBUG -std=c++17 -pthread -I"$work/include")
# The earlier sources under another namespace, so that both versions link into one program.
for source in moments threads; do
  "${cxx[@]}" -Dmelissa=melissa_before -I"$work/before" -c "$work/before/$source.cpp" \
    -o "$work/before_$source.o"
  "${cxx[@]}" -I"$root/include" -I"$root/cpp/stats" -c "$root/cpp/stats/$source.cpp" \
    -o "$work/after_$source.o"
done
"${cxx[@]}" -I"$root/include" -DBEFORE_STATS_HPP="\"$work/before/melissa/stats.hpp\"" \
  -c "$root/bench/moments_before_after.cpp" -o "$work/main.o"
"${cxx[@]}" "$work"/*.o -o "$work/moments_before_after"
echo "before: $(git -C "$root" rev-parse --short "$rev"); after: the working tree"
echo
"$work/moments_before_after"
