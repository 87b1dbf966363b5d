// SPDX-License-Identifier: BSD-3-Clause
#include "melissa/stats.hpp"
#include "tiling.hpp"

namespace melissa::stats {
namespace {

template <class T>
MELISSA_KERNEL void exceedance_step(std::uint64_t *__restrict counts, const T *__restrict x,
                                    std::size_t n, double threshold) {
    for (std::size_t i = 0; i < n; ++i)
        counts[i] += static_cast<double>(x[i]) > threshold ? 1 : 0;
}

} // namespace

ThresholdExceedance::ThresholdExceedance(std::size_t size, std::vector<double> thresholds)
    : size_(size), thresholds_(std::move(thresholds)), counts_(thresholds_.size() * size, 0) {}

template <class T> void ThresholdExceedance::update_impl(const T *fields, std::size_t n_fields) {
    std::uint64_t *counts = counts_.data();
    const std::size_t size = size_;
    const std::vector<double> &thresholds = thresholds_;
    detail::for_each_tile(
        size, size * n_fields * thresholds.size(), [&](std::size_t begin, std::size_t end) {
            for (std::size_t f = 0; f < n_fields; ++f)
                for (std::size_t t = 0; t < thresholds.size(); ++t)
                    exceedance_step(counts + t * size + begin, fields + f * size + begin,
                                    end - begin, thresholds[t]);
        });
    count_ += n_fields;
}

void ThresholdExceedance::update(const float *fields, std::size_t n_fields) {
    update_impl(fields, n_fields);
}
void ThresholdExceedance::update(const double *fields, std::size_t n_fields) {
    update_impl(fields, n_fields);
}

void ThresholdExceedance::merge(const ThresholdExceedance &other) {
    detail::require_same_size(size_, other.size_, "ThresholdExceedance.merge");
    detail::require(thresholds_ == other.thresholds_,
                    "ThresholdExceedance.merge: the two states count different thresholds");
    for (std::size_t i = 0; i < counts_.size(); ++i)
        counts_[i] += other.counts_[i];
    count_ += other.count_;
}

std::vector<StateArray> ThresholdExceedance::state() {
    using Type = StateArray::Type;
    return {{"count", &count_, Type::UInt64, {}},
            {"counts", counts_.data(), Type::UInt64, {thresholds_.size(), size_}}};
}

} // namespace melissa::stats
