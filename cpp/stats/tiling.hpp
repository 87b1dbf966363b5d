// SPDX-License-Identifier: BSD-3-Clause
//
// How the kernels walk memory: cells are cut into tiles small enough that a tile's state stays in
// cache while a whole batch of fields streams through it, so a batch of k fields costs one pass
// over the state from memory instead of k. Large updates spread tiles over threads.
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

// The largest tile: its state (2 MiB for order-4 moments) stays in the last-level cache while a
// batch's fields stream through it, and each field's piece (512 KiB) is a run long enough for the
// hardware prefetchers. Tiles of 512 cells made batches 2x slower than one field at a time,
// because 16 interleaved short runs defeat the prefetchers (bench/RESULTS.md).
constexpr std::size_t kMaxTileCells = 65536;

// Kernels that need per-cell scratch (Quantiles, Sobol) walk a tile in chunks of this many cells,
// so that the scratch lives on the stack and in L1.
constexpr std::size_t kChunkCells = 512;

// Below this many cell updates one thread is as fast as two: measured by bench/thread_crossover.sh
// (which rebuilds with MELISSA_PARALLEL_MIN_WORK=0 to see both sides of the crossover).
#ifndef MELISSA_PARALLEL_MIN_WORK
#define MELISSA_PARALLEL_MIN_WORK 32768
#endif
constexpr std::size_t kParallelMinWork = MELISSA_PARALLEL_MIN_WORK;

/// How an update of `size` cells and `work` cell updates is cut into tiles and threads.
struct Tiling {
    std::size_t tile_cells;
    std::size_t n_tiles;
    int threads;
};
Tiling plan_tiles(std::size_t size, std::size_t work);

/// Runs task(context, i) for i in [0, n_tasks) on the calling thread and up to threads - 1 helpers
/// of a shared pool; returns when all have run.
void run_parallel(std::size_t n_tasks, int threads, void (*task)(void *, std::size_t),
                  void *context);

/// Calls body(begin, end) for every tile of [0, size), on several threads when `work` is large.
template <class Body> void for_each_tile(std::size_t size, std::size_t work, const Body &body) {
    const Tiling tiling = plan_tiles(size, work);
    auto run_tile = [&](std::size_t tile) {
        const std::size_t begin = tile * tiling.tile_cells;
        body(begin, std::min(size, begin + tiling.tile_cells));
    };
    if (tiling.threads == 1) {
        for (std::size_t tile = 0; tile < tiling.n_tiles; ++tile)
            run_tile(tile);
        return;
    }
    run_parallel(
        tiling.n_tiles, tiling.threads,
        [](void *context, std::size_t tile) {
            (*static_cast<decltype(run_tile) *>(context))(tile);
        },
        &run_tile);
}

/// Calls body(begin, end) for every chunk of at most kChunkCells cells of [begin, end).
template <class Body> void for_each_chunk(std::size_t begin, std::size_t end, const Body &body) {
    for (std::size_t chunk = begin; chunk < end; chunk += kChunkCells)
        body(chunk, std::min(end, chunk + kChunkCells));
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

inline void merge_comoment(double &comoment, double other_comoment, double delta_x, double delta_y,
                           const MergeWeights &w) {
    comoment += other_comoment + delta_x * delta_y * w.cross;
}

} // namespace melissa::stats::detail
