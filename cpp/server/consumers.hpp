// SPDX-License-Identifier: BSD-3-Clause
//
// What a receiver hands complete pieces to: a queue that Python drains (training, tests), or the
// statistics kernels, updated on the receiver thread.
#pragma once

#include <condition_variable>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <vector>

#include "melissa/stats.hpp"
#include "receiver.hpp"

namespace melissa::server {

/// A bounded queue: when it is full, the receiver waits, and so, through the transport's
/// high-water marks, do the clients.
class MELISSA_EXPORT Collector final : public Consumer {
  public:
    explicit Collector(std::size_t capacity) : capacity_(capacity) {}
    void deliver(const Delivery &delivery, const std::atomic<bool> &stopping) override;
    /// The oldest delivery, or nothing after `timeout`.
    std::optional<Delivery> pop(std::chrono::milliseconds timeout);
    std::size_t size() const;

  private:
    std::size_t capacity_;
    mutable std::mutex mutex_;
    std::condition_variable not_empty_, not_full_;
    std::deque<Delivery> queue_;
};

/// Which statistics to keep for every (field, time step) of this rank's cells.
struct StatisticsSpec {
    int moments_order = 0; // 0: none; 1 to 4
    bool extrema = false;
    std::vector<double> thresholds;    // empty: no threshold exceedance
    std::vector<double> probabilities; // empty: no quantiles
};

/// The accumulators of one (field, time step).
struct Accumulators {
    std::unique_ptr<stats::Moments> moments;
    std::unique_ptr<stats::Extrema> extrema;
    std::unique_ptr<stats::ThresholdExceedance> exceedance;
    std::unique_ptr<stats::Quantiles> quantiles;
    std::uint64_t offset = 0; // first cell, in the whole field
};

/// Updates the kernels straight from the receiver thread: no Python per message.
class MELISSA_EXPORT FieldStatistics final : public Consumer {
  public:
    explicit FieldStatistics(StatisticsSpec spec) : spec_(std::move(spec)) {}
    void deliver(const Delivery &delivery, const std::atomic<bool> &stopping) override;

    /// Calls visit(field, time step, accumulators) for each, in order, under the lock.
    template <class Visit> void visit(Visit &&visit) {
        std::lock_guard<std::mutex> lock(mutex_);
        for (auto &[key, accumulators] : accumulators_)
            visit(key.first, key.second, accumulators);
    }

  private:
    StatisticsSpec spec_;
    std::mutex mutex_;
    std::map<std::pair<std::uint32_t, std::uint32_t>, Accumulators> accumulators_;
};

} // namespace melissa::server
