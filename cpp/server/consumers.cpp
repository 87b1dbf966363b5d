// SPDX-License-Identifier: BSD-3-Clause
#include "consumers.hpp"

#include <algorithm>

namespace melissa::server {

using namespace std::chrono_literals;

void Collector::deliver(const Delivery &delivery, const std::atomic<bool> &stopping) {
    std::unique_lock<std::mutex> lock(mutex_);
    // Wakes up now and then to notice `stopping`: a full queue nobody drains must not hang stop().
    while (queue_.size() >= capacity_)
        if (not_full_.wait_for(lock, 50ms) == std::cv_status::timeout && stopping)
            return;
    queue_.push_back(delivery);
    not_empty_.notify_one();
}

std::optional<Delivery> Collector::pop(std::chrono::milliseconds timeout) {
    std::unique_lock<std::mutex> lock(mutex_);
    if (!not_empty_.wait_for(lock, timeout, [this] { return !queue_.empty(); }))
        return std::nullopt;
    Delivery delivery = std::move(queue_.front());
    queue_.pop_front();
    not_full_.notify_one();
    return delivery;
}

std::size_t Collector::size() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return queue_.size();
}

namespace {
template <class T> void update_all(Accumulators &a, const T *values) {
    if (a.moments)
        a.moments->update(values, 1);
    if (a.extrema)
        a.extrema->update(values, 1);
    if (a.exceedance)
        a.exceedance->update(values, 1);
    if (a.quantiles)
        a.quantiles->update(values, 1);
}
} // namespace

Accumulators make_accumulators(const StatisticsSpec &spec, std::uint64_t offset,
                               std::uint64_t cells) {
    Accumulators a;
    a.offset = offset;
    a.cells = cells;
    if (spec.moments_order > 0)
        a.moments = std::make_unique<stats::Moments>(cells, spec.moments_order);
    if (spec.extrema)
        a.extrema = std::make_unique<stats::Extrema>(cells);
    if (!spec.thresholds.empty())
        a.exceedance = std::make_unique<stats::ThresholdExceedance>(cells, spec.thresholds);
    if (!spec.probabilities.empty())
        a.quantiles = std::make_unique<stats::Quantiles>(cells, spec.probabilities);
    if (spec.sobol_params > 0)
        a.sobol = std::make_unique<stats::Sobol>(cells, spec.sobol_params);
    return a;
}

std::vector<std::pair<std::string, std::vector<stats::StateArray>>> kernel_states(Accumulators &a) {
    std::vector<std::pair<std::string, std::vector<stats::StateArray>>> states;
    if (a.moments)
        states.emplace_back("moments", a.moments->state());
    if (a.extrema)
        states.emplace_back("extrema", a.extrema->state());
    if (a.exceedance)
        states.emplace_back("exceedance", a.exceedance->state());
    if (a.quantiles)
        states.emplace_back("quantiles", a.quantiles->state());
    if (a.sobol)
        states.emplace_back("sobol", a.sobol->state());
    return states;
}

void FieldStatistics::replace(AccumulatorMap accumulators, GroupMap groups) {
    std::lock_guard<std::mutex> lock(mutex_);
    accumulators_ = std::move(accumulators);
    groups_ = std::move(groups);
}

Accumulators &FieldStatistics::accumulators_for(const Delivery &d) {
    auto found = accumulators_.find({d.field_id, d.time_step});
    if (found == accumulators_.end())
        found = accumulators_
                    .emplace(std::make_pair(d.field_id, d.time_step),
                             make_accumulators(spec_, d.offset, d.count))
                    .first;
    return found->second;
}

void FieldStatistics::add_to_group(Accumulators &a, const Delivery &d) {
    const std::size_t group_size = spec_.sobol_params + 2;
    const auto group_id = static_cast<std::uint32_t>(d.simulation_id / group_size);
    const std::size_t member = d.simulation_id % group_size;
    auto [found, created] = groups_.try_emplace({d.field_id, d.time_step, group_id});
    Group &g = found->second;
    if (created) {
        g.values.resize(group_size * d.count);
        g.arrived.assign(group_size, false);
    }
    double *row = g.values.data() + member * d.count;
    if (d.dtype == wire::DType::Float64)
        std::copy_n(static_cast<const double *>(d.values), d.count, row);
    else
        std::copy_n(static_cast<const float *>(d.values), d.count, row);
    if (!g.arrived[member]) {
        g.arrived[member] = true;
        ++g.n_arrived;
    }
    if (g.n_arrived < group_size)
        return;
    a.sobol->update(g.values.data(), 1);
    groups_.erase(found);
}

void FieldStatistics::deliver(const Delivery &d, const std::atomic<bool> &) {
    std::lock_guard<std::mutex> lock(mutex_);
    Accumulators &a = accumulators_for(d);
    const bool independent_draw =
        spec_.sobol_params == 0 || d.simulation_id % (spec_.sobol_params + 2) < 2;
    if (independent_draw) {
        if (d.dtype == wire::DType::Float64)
            update_all(a, static_cast<const double *>(d.values));
        else
            update_all(a, static_cast<const float *>(d.values));
    }
    if (a.sobol)
        add_to_group(a, d);
}

std::size_t FieldStatistics::pending_groups() {
    std::lock_guard<std::mutex> lock(mutex_);
    return groups_.size();
}

} // namespace melissa::server
