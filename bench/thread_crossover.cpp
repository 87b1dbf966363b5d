// SPDX-License-Identifier: BSD-3-Clause
//
// From what field size does a second thread pay? Times one update of order-4 moments and of
// extrema with 1 and 2 threads for growing sizes. Run through bench/thread_crossover.sh, which
// builds the library with no size threshold so that small sizes really use both threads.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <vector>

#include "melissa/stats.hpp"

namespace ms = melissa::stats;

template <class F> double best_seconds(F &&f, int repeats) {
    double best = 1e30;
    for (int r = 0; r < repeats; ++r) {
        const auto start = std::chrono::steady_clock::now();
        f();
        best = std::min(
            best, std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    }
    return best;
}

int main() {
    std::printf("| cells | 1 thread (us) | 2 threads (us) | speedup |\n|---|---|---|---|\n");
    for (std::size_t size = 1024; size <= (std::size_t{1} << 20); size *= 2) {
        const std::vector<double> field(size, 1.5);
        double seconds[2];
        for (int threads = 1; threads <= 2; ++threads) {
            ms::set_num_threads(threads);
            ms::Moments moments(size);
            ms::Extrema extrema(size);
            const int repeats = static_cast<int>(std::max<std::size_t>(5, (1u << 24) / size));
            seconds[threads - 1] = best_seconds(
                [&] {
                    moments.update(field.data(), 1);
                    extrema.update(field.data(), 1);
                },
                repeats);
        }
        std::printf("| %zu | %.2f | %.2f | %.2f |\n", size, seconds[0] * 1e6, seconds[1] * 1e6,
                    seconds[0] / seconds[1]);
    }
    return 0;
}
