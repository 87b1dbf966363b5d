// SPDX-License-Identifier: BSD-3-Clause
//
// Moments::update of this tree against an earlier commit's (bench/moments_before_after.sh builds
// both into this one program, the earlier one under the namespace melissa_before), timed in
// alternation: each round times a few updates of one, then of the other, and a ratio is the
// median over rounds of the ratio within a round. On a shared VM whose memory bandwidth drifts
// by tens of percent from one process to the next, only paired rounds see a change of a few
// percent.
#include <sys/mman.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <ctime>
#include <new>
#include <vector>

#include "melissa/stats.hpp"

#define melissa melissa_before
#include BEFORE_STATS_HPP
#undef melissa

namespace {

constexpr std::size_t kCells = 1000000, kPool = 8;
constexpr int kRounds = 31, kFieldsPerRound = 16;

/// Input as numpy holds a large array: in huge pages where the kernel gives them, 16 bytes past
/// the start of a page.
template <class T> T *numpy_like(std::size_t n) {
    constexpr std::size_t huge = std::size_t{2} << 20;
    const std::size_t bytes = n * sizeof(T) + 64;
    void *map =
        mmap(nullptr, bytes + huge, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (map == MAP_FAILED)
        throw std::bad_alloc();
    auto *start = reinterpret_cast<char *>((reinterpret_cast<std::uintptr_t>(map) + huge - 1) &
                                           ~std::uintptr_t{huge - 1});
#if defined(MADV_HUGEPAGE)
    madvise(start, bytes, MADV_HUGEPAGE);
#endif
    return reinterpret_cast<T *>(start + 16);
}

double seconds(clockid_t clock) {
    timespec t;
    clock_gettime(clock, &t);
    return static_cast<double>(t.tv_sec) + 1e-9 * static_cast<double>(t.tv_nsec);
}

double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}

struct Timing {
    std::vector<double> wall, cpu;
};

template <class Acc, class T> void time_round(Acc &acc, const T *pool, int batch, Timing &out) {
    const double wall = seconds(CLOCK_MONOTONIC), cpu = seconds(CLOCK_PROCESS_CPUTIME_ID);
    for (int f = 0; f < kFieldsPerRound; f += batch)
        acc.update(pool + static_cast<std::size_t>(f % kPool) * kCells, batch);
    out.wall.push_back((seconds(CLOCK_MONOTONIC) - wall) / kFieldsPerRound * 1e3);
    out.cpu.push_back((seconds(CLOCK_PROCESS_CPUTIME_ID) - cpu) / kFieldsPerRound * 1e3);
}

template <class T> void compare(const T *pool, int order, int threads, int batch) {
    melissa::stats::set_num_threads(threads);
    melissa_before::stats::set_num_threads(threads);
    melissa::stats::Moments after(kCells, order);
    melissa_before::stats::Moments before(kCells, order);
    after.update(pool, 1);
    before.update(pool, 1);
    Timing b, a;
    std::vector<double> wall_ratio, cpu_ratio;
    for (int round = 0; round < kRounds; ++round) {
        time_round(before, pool, batch, b);
        time_round(after, pool, batch, a);
        wall_ratio.push_back(a.wall.back() / b.wall.back());
        cpu_ratio.push_back(a.cpu.back() / b.cpu.back());
    }
    std::printf("| %d | %d | %s | %d | %.3f | %.3f | %.3f | %.3f | %.3f | %.3f |\n", order, threads,
                sizeof(T) == 8 ? "float64" : "float32", batch, median(b.wall), median(a.wall),
                median(wall_ratio), median(b.cpu), median(a.cpu), median(cpu_ratio));
}

} // namespace

int main() {
    double *pool64 = numpy_like<double>(kPool * kCells);
    float *pool32 = numpy_like<float>(kPool * kCells);
    std::uint64_t state = 1;
    for (std::size_t i = 0; i < kPool * kCells; ++i) {
        state = state * 6364136223846793005u + 1442695040888963407u;
        pool64[i] = 300.0 + static_cast<double>(state >> 11) * 0x1p-53;
        pool32[i] = static_cast<float>(pool64[i]);
    }
    std::printf("Moments.update of %zu cells, ms per field (median of %d paired rounds)\n\n",
                kCells, kRounds);
    std::printf("| order | threads | input | fields per update | before wall | after wall | "
                "after / before | before CPU | after CPU | after / before |\n");
    std::printf("|---|---|---|---|---|---|---|---|---|---|\n");
    for (int order : {4, 2, 1})
        for (int threads : {1, 2})
            for (int batch : {1, 8}) {
                compare(pool64, order, threads, batch);
                compare(pool32, order, threads, batch);
            }
}
