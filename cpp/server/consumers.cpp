// SPDX-License-Identifier: BSD-3-Clause
#include "consumers.hpp"

#include <algorithm>
#include <stdexcept>

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

Accumulators make_accumulators(const StatisticsSpec &spec, std::uint32_t field,
                               std::uint64_t offset, std::uint64_t cells) {
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
    for (std::size_t i = 0; i < spec.covariance.size(); ++i)
        if (spec.covariance[i].field == field)
            a.covariance.emplace(i, cells);
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
    for (auto &[pair, covariance] : a.covariance)
        states.emplace_back("covariance:" + std::to_string(pair), covariance.state());
    return states;
}

FieldStatistics::FieldStatistics(StatisticsSpec spec) : spec_(std::move(spec)) {
    const std::size_t n = spec_.n_parameters;
    if (n == 0 ? !spec_.parameters.empty() : spec_.parameters.size() % n != 0)
        throw std::invalid_argument("FieldStatistics: " + std::to_string(spec_.parameters.size()) +
                                    " parameter values are not rows of " + std::to_string(n));
    for (const CovariancePair &pair : spec_.covariance) {
        const std::string which =
            "FieldStatistics: covariance of field " + std::to_string(pair.field) + " with " +
            (pair.parameter ? "parameter " : "field ") + std::to_string(pair.other);
        if (pair.parameter && pair.other >= n)
            throw std::invalid_argument(which + ", of " + std::to_string(n) + " parameters");
        if (!pair.parameter && pair.other == pair.field)
            throw std::invalid_argument(which + ": a field with itself");
    }
}

void FieldStatistics::replace(AccumulatorMap accumulators, GroupMap groups, HalfMap halves) {
    std::lock_guard<std::mutex> lock(mutex_);
    accumulators_ = std::move(accumulators);
    groups_ = std::move(groups);
    halves_ = std::move(halves);
}

Accumulators &FieldStatistics::accumulators_for(std::uint32_t field, std::uint32_t step,
                                                std::uint64_t offset, std::uint64_t cells) {
    auto found = accumulators_.find({field, step});
    if (found == accumulators_.end())
        found = accumulators_
                    .emplace(std::make_pair(field, step),
                             make_accumulators(spec_, field, offset, cells))
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

void FieldStatistics::add_to_pair(std::size_t pair, const Delivery &d,
                                  const std::vector<double> &values) {
    const CovariancePair &p = spec_.covariance[pair];
    const bool first = p.field == d.field_id;
    auto [found, created] =
        halves_.try_emplace({static_cast<std::uint32_t>(pair), d.time_step, d.simulation_id});
    Half &half = found->second;
    if (created) {
        half.first = first;
        half.offset = d.offset;
        half.values = values;
        return;
    }
    if (half.offset != d.offset || half.values.size() != d.count) {
        // Fields of different sizes: the ranks own different cells of each.
        ++dropped_["covariance of two fields whose cells differ"];
    } else {
        const std::vector<double> &x = first ? values : half.values;
        const std::vector<double> &y = first ? half.values : values;
        accumulators_for(p.field, d.time_step, d.offset, d.count)
            .covariance.at(pair)
            .update(x.data(), y.data(), 1);
    }
    halves_.erase(found);
}

void FieldStatistics::update_covariances(Accumulators &a, const Delivery &d,
                                         const std::vector<double> &values) {
    const std::size_t n = spec_.n_parameters;
    const std::size_t rows = n == 0 ? 0 : spec_.parameters.size() / n;
    for (std::size_t i = 0; i < spec_.covariance.size(); ++i) {
        const CovariancePair &p = spec_.covariance[i];
        if (!p.parameter) {
            if (p.field == d.field_id || p.other == d.field_id)
                add_to_pair(i, d, values);
        } else if (p.field == d.field_id) {
            if (d.simulation_id >= rows) {
                ++dropped_["covariance with a parameter of a simulation without parameters"];
                continue;
            }
            const std::vector<double> y(d.count, spec_.parameters[d.simulation_id * n + p.other]);
            a.covariance.at(i).update(values.data(), y.data(), 1);
        }
    }
}

void FieldStatistics::deliver(const Delivery &d, const std::atomic<bool> &) {
    std::lock_guard<std::mutex> lock(mutex_);
    Accumulators &a = accumulators_for(d.field_id, d.time_step, d.offset, d.count);
    const bool independent_draw =
        spec_.sobol_params == 0 || d.simulation_id % (spec_.sobol_params + 2) < 2;
    if (independent_draw) {
        if (d.dtype == wire::DType::Float64)
            update_all(a, static_cast<const double *>(d.values));
        else
            update_all(a, static_cast<const float *>(d.values));
        const bool paired = std::any_of(
            spec_.covariance.begin(), spec_.covariance.end(), [&](const CovariancePair &p) {
                return p.field == d.field_id || (!p.parameter && p.other == d.field_id);
            });
        if (paired) {
            // As float64 whatever the field's type: a parameter is one, and the two fields of a
            // pair may differ in type.
            std::vector<double> values(d.count);
            if (d.dtype == wire::DType::Float64)
                std::copy_n(static_cast<const double *>(d.values), d.count, values.data());
            else
                std::copy_n(static_cast<const float *>(d.values), d.count, values.data());
            update_covariances(a, d, values);
        }
    }
    if (a.sobol)
        add_to_group(a, d);
}

std::size_t FieldStatistics::pending_groups() {
    std::lock_guard<std::mutex> lock(mutex_);
    return groups_.size();
}

std::size_t FieldStatistics::pending_halves() {
    std::lock_guard<std::mutex> lock(mutex_);
    return halves_.size();
}

std::map<std::string, std::uint64_t> FieldStatistics::dropped() {
    std::lock_guard<std::mutex> lock(mutex_);
    return dropped_;
}

} // namespace melissa::server
