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
#include <tuple>
#include <vector>

#include "melissa/stats.hpp"
#include "receiver.hpp"

namespace melissa::server {

/// A bounded queue: when it is full, the receiver waits, and so, through the transport's
/// high-water marks, do the clients.
class Collector final : public Consumer {
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
    // Sobol indices over pick-freeze groups: simulation g * (n + 2) + j is member j of group g
    // (A, B, C_1 ... C_n). The other statistics then use the A and B members only, the ensemble's
    // independent draws. 0: no Sobol indices.
    std::size_t sobol_params = 0;
};

/// The accumulators of one (field, time step).
struct Accumulators {
    std::unique_ptr<stats::Moments> moments;
    std::unique_ptr<stats::Extrema> extrema;
    std::unique_ptr<stats::ThresholdExceedance> exceedance;
    std::unique_ptr<stats::Quantiles> quantiles;
    std::unique_ptr<stats::Sobol> sobol;
    std::uint64_t offset = 0; // first cell, in the whole field
    std::uint64_t cells = 0;
};

/// Fresh accumulators of `cells` cells from `offset`, for the statistics `spec` asks.
Accumulators make_accumulators(const StatisticsSpec &spec, std::uint64_t offset,
                               std::uint64_t cells);

/// The state arrays of each kernel present, named as melissa.stats names its statistic
/// ("moments", "extrema", "exceedance", "quantiles", "sobol"), in that order.
std::vector<std::pair<std::string, std::vector<stats::StateArray>>> kernel_states(Accumulators &a);

/// Updates the kernels straight from the receiver thread: no Python per message.
class FieldStatistics final : public Consumer {
  public:
    explicit FieldStatistics(StatisticsSpec spec) : spec_(std::move(spec)) {}
    void deliver(const Delivery &delivery, const std::atomic<bool> &stopping) override;
    const StatisticsSpec &spec() const { return spec_; }

    /// Calls visit(field, time step, accumulators) for each, in order, under the lock.
    template <class Visit> void visit(Visit &&visit) {
        std::lock_guard<std::mutex> lock(mutex_);
        for (auto &[key, accumulators] : accumulators_)
            visit(key.first, key.second, accumulators);
    }

    /// The members of one group at one (field, time step) that have arrived so far.
    struct Group {
        std::vector<double> values; // (n_params + 2, cells)
        std::vector<bool> arrived;
        std::size_t n_arrived = 0;
    };
    using GroupKey = std::tuple<std::uint32_t, std::uint32_t, std::uint32_t>; // field, step, group
    using AccumulatorMap = std::map<std::pair<std::uint32_t, std::uint32_t>, Accumulators>;
    using GroupMap = std::map<GroupKey, Group>;

    /// Groups of which some members have arrived, for every (field, time step): what is in
    /// flight, and what failed simulations left incomplete.
    std::size_t pending_groups();

    /// For checkpoints: the groups in flight, under the lock.
    template <class Visit> void visit_groups(Visit &&visit) {
        std::lock_guard<std::mutex> lock(mutex_);
        for (auto &[key, group] : groups_)
            visit(key, group);
    }
    /// Takes up a checkpoint's accumulators and groups in flight in place of its own.
    void replace(AccumulatorMap accumulators, GroupMap groups);

  private:
    Accumulators &accumulators_for(const Delivery &delivery);
    void add_to_group(Accumulators &accumulators, const Delivery &delivery);

    StatisticsSpec spec_;
    std::mutex mutex_;
    AccumulatorMap accumulators_;
    GroupMap groups_;
};

} // namespace melissa::server
