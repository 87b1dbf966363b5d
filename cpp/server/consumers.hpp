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
#include <string>
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

/// Two variables whose covariance and correlation are kept cell by cell over the ensemble, in
/// the accumulators of the first: a field and another field, or a field and a parameter, whose
/// value is then the same on every cell.
struct CovariancePair {
    std::uint32_t field = 0;
    std::uint32_t other = 0; // a field id, or with `parameter` a parameter's index
    bool parameter = false;
    bool operator==(const CovariancePair &o) const {
        return field == o.field && other == o.other && parameter == o.parameter;
    }
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
    std::vector<CovariancePair> covariance;
    // Each simulation's parameters, row-major (simulations x n_parameters), for the pairs of a
    // field and a parameter. Not a statistic: a checkpoint neither holds nor compares it.
    std::size_t n_parameters = 0;
    std::vector<double> parameters;
};

/// The accumulators of one (field, time step).
struct Accumulators {
    std::unique_ptr<stats::Moments> moments;
    std::unique_ptr<stats::Extrema> extrema;
    std::unique_ptr<stats::ThresholdExceedance> exceedance;
    std::unique_ptr<stats::Quantiles> quantiles;
    std::unique_ptr<stats::Sobol> sobol;
    std::map<std::size_t, stats::Covariance> covariance; // by pair index, for pairs of this field
    std::uint64_t offset = 0;                            // first cell, in the whole field
    std::uint64_t cells = 0;
};

/// Fresh accumulators of `cells` cells from `offset` of `field`, for the statistics `spec` asks.
Accumulators make_accumulators(const StatisticsSpec &spec, std::uint32_t field,
                               std::uint64_t offset, std::uint64_t cells);

/// The state arrays of each kernel present, named as melissa.stats names its statistic
/// ("moments", "extrema", "exceedance", "quantiles", "sobol"), in that order, then
/// "covariance:<i>" for the covariance of pair i of the spec, by increasing i.
std::vector<std::pair<std::string, std::vector<stats::StateArray>>> kernel_states(Accumulators &a);

/// Updates the kernels straight from the receiver thread: no Python per message.
class FieldStatistics final : public Consumer {
  public:
    /// Throws std::invalid_argument if `spec` contradicts itself (a pair of a field with itself,
    /// of a parameter beyond n_parameters, a parameter table not of whole rows).
    explicit FieldStatistics(StatisticsSpec spec);
    void deliver(const Delivery &delivery, const std::atomic<bool> &stopping) override;
    const StatisticsSpec &spec() const { return spec_; }

    /// Calls visit(field, time step, accumulators) for each, in order, under the lock.
    template <class Visit> void visit(Visit &&visit) {
        std::lock_guard<std::mutex> lock(mutex_);
        for (auto &[key, accumulators] : accumulators_)
            visit(key.first, key.second, accumulators);
    }

    /// Calls visit(accumulators) of one (field, time step) under the lock; false if it has none.
    template <class Visit> bool visit_one(std::uint32_t field, std::uint32_t step, Visit &&visit) {
        std::lock_guard<std::mutex> lock(mutex_);
        const auto found = accumulators_.find({field, step});
        if (found == accumulators_.end())
            return false;
        visit(found->second);
        return true;
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

    /// One field of a pair of fields at one (simulation, time step), waiting for the other: the
    /// two come in messages of their own, in any order.
    struct Half {
        bool first = true; // the pair's first field; else its other
        std::uint64_t offset = 0;
        std::vector<double> values;
    };
    using HalfKey = std::tuple<std::uint32_t, std::uint32_t, std::uint32_t>; // pair, step, sim
    using HalfMap = std::map<HalfKey, Half>;

    /// Halves waiting for their other field: what is in flight, and what failed simulations
    /// left without it.
    std::size_t pending_halves();

    /// For checkpoints: the halves in flight, under the lock.
    template <class Visit> void visit_halves(Visit &&visit) {
        std::lock_guard<std::mutex> lock(mutex_);
        for (auto &[key, half] : halves_)
            visit(key, half);
    }

    /// Updates not made, by reason: simulations without a row of parameters, pairs of fields
    /// whose cells differ.
    std::map<std::string, std::uint64_t> dropped();

    /// Takes up a checkpoint's accumulators, groups and halves in flight in place of its own.
    void replace(AccumulatorMap accumulators, GroupMap groups, HalfMap halves);

  private:
    Accumulators &accumulators_for(std::uint32_t field, std::uint32_t step, std::uint64_t offset,
                                   std::uint64_t cells);
    void add_to_group(Accumulators &accumulators, const Delivery &delivery);
    void update_covariances(Accumulators &accumulators, const Delivery &delivery,
                            const std::vector<double> &values);
    void add_to_pair(std::size_t pair, const Delivery &delivery, const std::vector<double> &values);

    StatisticsSpec spec_;
    std::mutex mutex_;
    AccumulatorMap accumulators_;
    GroupMap groups_;
    HalfMap halves_;
    std::map<std::string, std::uint64_t> dropped_;
};

} // namespace melissa::server
