// SPDX-License-Identifier: BSD-3-Clause
//
// The kernels' threads. Not OpenMP: an OpenMP region ends in a barrier that waits for every
// thread, so one helper preempted by another process (a solver, the receiver) stalls the update
// for a whole scheduler slice; measured 5 to 8 ms per update under a single busy process. Here the
// caller claims tiles too and waits only for tiles already claimed, so a helper that is late
// simply finds no work left.
#include <pthread.h>
#include <sched.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "melissa/stats.hpp"
#include "tiling.hpp"

namespace melissa::stats {
namespace {

/// MELISSA_NUM_THREADS if set, else the cores this process may run on (its affinity mask, which
/// mpirun, srun and taskset narrow), so that ranks bound to one core stay on one thread.
int default_threads() {
    if (const char *env = std::getenv("MELISSA_NUM_THREADS")) {
        const int n = std::atoi(env);
        if (n >= 1)
            return n;
    }
    cpu_set_t cpus;
    if (sched_getaffinity(0, sizeof(cpus), &cpus) == 0)
        return std::max(1, CPU_COUNT(&cpus));
    return static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
}

// 0 means "not chosen yet": the default is read on first use, after launchers set the environment.
std::atomic<int> chosen_threads{0};

struct Job {
    std::size_t n_tasks;
    void (*task)(void *, std::size_t);
    void *context;
    int max_helpers;
    std::atomic<std::size_t> next{0}, done{0};
    std::atomic<int> helpers{0};

    Job(std::size_t n, void (*t)(void *, std::size_t), void *c, int h)
        : n_tasks(n), task(t), context(c), max_helpers(h) {}

    void work() {
        for (std::size_t i; (i = next.fetch_add(1)) < n_tasks;) {
            task(context, i);
            done.fetch_add(1, std::memory_order_release);
        }
    }
};

class Pool {
  public:
    void run(std::size_t n_tasks, int threads, void (*task)(void *, std::size_t), void *context) {
        auto job = std::make_shared<Job>(n_tasks, task, context, threads - 1);
        // One job at a time uses the helpers; a concurrent caller (another receiver thread) runs
        // its own job alone rather than wait.
        std::unique_lock<std::mutex> exclusive(running_, std::try_to_lock);
        if (exclusive.owns_lock()) {
            {
                std::lock_guard<std::mutex> lock(mutex_);
                while (static_cast<int>(workers_.size()) < threads - 1)
                    workers_.emplace_back([this] { serve(); });
                job_ = job;
                ++generation_;
            }
            wake_.notify_all();
        }
        job->work();
        // Only tiles already claimed by a helper remain: short, so yielding beats sleeping.
        while (job->done.load(std::memory_order_acquire) < n_tasks)
            std::this_thread::yield();
    }

  private:
    void serve() {
        std::uint64_t seen = 0;
        for (;;) {
            std::shared_ptr<Job> job;
            {
                std::unique_lock<std::mutex> lock(mutex_);
                wake_.wait(lock, [&] { return generation_ != seen; });
                seen = generation_;
                job = job_;
            }
            if (job->helpers.fetch_add(1) < job->max_helpers)
                job->work();
        }
    }

    std::mutex running_, mutex_;
    std::condition_variable wake_;
    std::vector<std::thread> workers_;
    std::shared_ptr<Job> job_;
    std::uint64_t generation_ = 0;
};

// Never destroyed: helpers sleep until the process exits. A forked child gets a fresh pool, since
// it inherits the parent's pool without its threads (and maybe with a mutex held).
Pool *pool_instance = nullptr;

Pool &pool() {
    static std::once_flag once;
    std::call_once(once, [] {
        pool_instance = new Pool;
        pthread_atfork(nullptr, nullptr, [] { pool_instance = new Pool; });
    });
    return *pool_instance;
}

std::size_t ceil_div(std::size_t a, std::size_t b) { return (a + b - 1) / b; }

} // namespace

void set_num_threads(int n) {
    detail::require(n >= 1, "number of threads must be at least 1, got " + std::to_string(n));
    chosen_threads = n;
}

int get_num_threads() {
    const int n = chosen_threads.load();
    return n > 0 ? n : default_threads();
}

namespace detail {

Tiling plan_tiles(std::size_t size, std::size_t work) {
    const int threads = work < kParallelMinWork ? 1 : get_num_threads();
    std::size_t n_tiles = ceil_div(size, kMaxTileCells);
    if (threads > 1) // several tiles per thread, so that a thread that falls behind leaves work
        n_tiles = std::max<std::size_t>(n_tiles, 4 * static_cast<std::size_t>(threads));
    n_tiles = std::max<std::size_t>(1, std::min(n_tiles, ceil_div(size, kChunkCells)));
    // A multiple of 8 cells, so that no tile boundary splits a vector.
    const std::size_t tile_cells =
        std::max<std::size_t>(8, ceil_div(ceil_div(size, n_tiles), 8) * 8);
    n_tiles = ceil_div(size, tile_cells);
    return {tile_cells, n_tiles, static_cast<int>(std::min<std::size_t>(threads, n_tiles))};
}

void run_parallel(std::size_t n_tasks, int threads, void (*task)(void *, std::size_t),
                  void *context) {
    pool().run(n_tasks, threads, task, context);
}

} // namespace detail
} // namespace melissa::stats
