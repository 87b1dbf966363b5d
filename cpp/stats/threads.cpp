// SPDX-License-Identifier: BSD-3-Clause
#include <algorithm>
#include <atomic>
#include <stdexcept>

#include "melissa/stats.hpp"
#include "tiling.hpp"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace melissa::stats {
namespace {
int default_threads() {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

// 0 means "not chosen yet": the default is read on first use so that OMP_NUM_THREADS set after
// the library is loaded (as launchers do) still counts.
std::atomic<int> chosen_threads{0};
} // namespace

void set_num_threads(int n) {
    detail::require(n >= 1, "number of threads must be at least 1, got " + std::to_string(n));
    chosen_threads = n;
}

int get_num_threads() {
    int n = chosen_threads.load();
    return n > 0 ? n : default_threads();
}

namespace detail {
int threads_for(std::size_t work, std::size_t n_tiles) {
    if (work < kParallelMinWork || n_tiles < 2)
        return 1;
    return static_cast<int>(std::min<std::size_t>(get_num_threads(), n_tiles));
}
} // namespace detail
} // namespace melissa::stats
