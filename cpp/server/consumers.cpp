// SPDX-License-Identifier: BSD-3-Clause
#include "consumers.hpp"

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

void FieldStatistics::deliver(const Delivery &d, const std::atomic<bool> &) {
    std::lock_guard<std::mutex> lock(mutex_);
    auto [found, created] = accumulators_.try_emplace({d.field_id, d.time_step});
    Accumulators &a = found->second;
    if (created) {
        a.offset = d.offset;
        if (spec_.moments_order > 0)
            a.moments = std::make_unique<stats::Moments>(d.count, spec_.moments_order);
        if (spec_.extrema)
            a.extrema = std::make_unique<stats::Extrema>(d.count);
        if (!spec_.thresholds.empty())
            a.exceedance = std::make_unique<stats::ThresholdExceedance>(d.count, spec_.thresholds);
        if (!spec_.probabilities.empty())
            a.quantiles = std::make_unique<stats::Quantiles>(d.count, spec_.probabilities);
    }
    if (d.dtype == wire::DType::Float64)
        update_all(a, static_cast<const double *>(d.values));
    else
        update_all(a, static_cast<const float *>(d.values));
}

} // namespace melissa::server
