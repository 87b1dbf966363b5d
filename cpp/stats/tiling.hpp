// SPDX-License-Identifier: BSD-3-Clause
//
// How the kernels walk memory: cells are cut into tiles small enough that a tile's state stays in
// cache while a whole batch of fields streams through it, so a batch of k fields costs one pass
// over the state instead of k. Large updates spread tiles over threads.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>

// Each per-cell kernel is compiled for x86-64-v3 (AVX2) and for the baseline, and the dynamic
// loader picks the one the machine runs: a build made on a login node stays correct on older
// compute nodes, and uses wide vectors where they exist.
#if defined(__x86_64__) && defined(__GNUC__) && defined(__ELF__)
#define MELISSA_KERNEL __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define MELISSA_KERNEL
#endif

namespace melissa::stats::detail {

// 512 cells: the state of a tile (16 KiB for order-4 moments, 4 + 4 p doubles per cell for Sobol)
// stays in L1 or L2 while the fields of a batch stream through it; a size measured in bench/.
constexpr std::size_t kTileCells = 512;

// Below this many cell updates one thread is as fast as two: measured by bench/thread_crossover.sh
// (which rebuilds with MELISSA_PARALLEL_MIN_WORK=0 to see both sides of the crossover).
#ifndef MELISSA_PARALLEL_MIN_WORK
#define MELISSA_PARALLEL_MIN_WORK 8192
#endif
constexpr std::size_t kParallelMinWork = MELISSA_PARALLEL_MIN_WORK;

int threads_for(std::size_t work, std::size_t n_tiles);

/// Calls body(begin, end) for every tile of [0, size), on several threads when `work` is large.
template <class Body> void for_each_tile(std::size_t size, std::size_t work, const Body &body) {
    const std::size_t n_tiles = (size + kTileCells - 1) / kTileCells;
    const int threads = threads_for(work, n_tiles);
    const auto tiles = static_cast<std::ptrdiff_t>(n_tiles);
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1)
    for (std::ptrdiff_t tile = 0; tile < tiles; ++tile) {
        const std::size_t begin = static_cast<std::size_t>(tile) * kTileCells;
        body(begin, std::min(size, begin + kTileCells));
    }
}

inline void require(bool condition, const std::string &message) {
    if (!condition)
        throw std::invalid_argument(message);
}

inline void require_same_size(std::size_t mine, std::size_t theirs, const char *what) {
    require(mine == theirs, std::string(what) + ": cannot merge a state of " +
                                std::to_string(theirs) + " cells into one of " +
                                std::to_string(mine) + " cells");
}

inline double nan() { return std::numeric_limits<double>::quiet_NaN(); }

/// Pairwise-merge weights of two partial states of counts na and nb (Chan et al.).
struct MergeWeights {
    double other_share; // nb / n
    double cross;       // na * nb / n
    MergeWeights(std::uint64_t na, std::uint64_t nb) {
        const double a = static_cast<double>(na), b = static_cast<double>(nb), n = a + b;
        other_share = b / n;
        cross = a * b / n;
    }
};

/// Merges one variable's mean and sum of squared deviations; returns the difference of the means
/// (other - this), which the comoments of this variable need.
inline double merge_variable(double &mean, double &m2, double other_mean, double other_m2,
                             const MergeWeights &w) {
    const double delta = other_mean - mean;
    mean += delta * w.other_share;
    m2 += other_m2 + delta * delta * w.cross;
    return delta;
}

inline void merge_comoment(double &comoment, double other_comoment, double delta_x,
                           double delta_y, const MergeWeights &w) {
    comoment += other_comoment + delta_x * delta_y * w.cross;
}

} // namespace melissa::stats::detail
