// SPDX-License-Identifier: BSD-3-Clause
#include <limits>

#include "melissa/stats.hpp"
#include "tiling.hpp"

namespace melissa::stats {
namespace {

// Lowers lo towards low and raises hi towards high; an update passes the same field as both, a
// merge the other state's min and max. `v != v` keeps NaN sticky: std::min would drop it or not
// depending on argument order.
template <class T>
MELISSA_KERNEL void extrema_step(double *__restrict lo, double *__restrict hi,
                                 const T *__restrict low, const T *__restrict high, std::size_t n) {
    for (std::size_t i = 0; i < n; ++i) {
        const double l = static_cast<double>(low[i]), h = static_cast<double>(high[i]);
        lo[i] = (l < lo[i] || l != l) ? l : lo[i];
        hi[i] = (h > hi[i] || h != h) ? h : hi[i];
    }
}

} // namespace

// Starting from +inf/-inf makes the first update and a merge with an empty state ordinary steps.
Extrema::Extrema(std::size_t size)
    : size_(size), min_(size, std::numeric_limits<double>::infinity()),
      max_(size, -std::numeric_limits<double>::infinity()) {}

template <class T> void Extrema::update_impl(const T *fields, std::size_t n_fields) {
    double *lo = min_.data(), *hi = max_.data();
    const std::size_t size = size_;
    detail::for_each_tile(size, size * n_fields, [&](std::size_t begin, std::size_t end) {
        for (std::size_t f = 0; f < n_fields; ++f) {
            const T *field = fields + f * size + begin;
            extrema_step(lo + begin, hi + begin, field, field, end - begin);
        }
    });
    count_ += n_fields;
}

void Extrema::update(const float *fields, std::size_t n_fields) { update_impl(fields, n_fields); }
void Extrema::update(const double *fields, std::size_t n_fields) { update_impl(fields, n_fields); }

void Extrema::merge(const Extrema &other) {
    detail::require_same_size(size_, other.size_, "Extrema.merge");
    double *lo = min_.data(), *hi = max_.data();
    const double *olo = other.min_.data(), *ohi = other.max_.data();
    detail::for_each_tile(size_, size_, [&](std::size_t begin, std::size_t end) {
        extrema_step(lo + begin, hi + begin, olo + begin, ohi + begin, end - begin);
    });
    count_ += other.count_;
}

void Extrema::min(double *out) const {
    for (std::size_t i = 0; i < size_; ++i)
        out[i] = count_ == 0 ? detail::nan() : min_[i];
}

void Extrema::max(double *out) const {
    for (std::size_t i = 0; i < size_; ++i)
        out[i] = count_ == 0 ? detail::nan() : max_[i];
}

std::vector<StateArray> Extrema::state() {
    using Type = StateArray::Type;
    return {{"count", &count_, Type::UInt64, {}},
            {"min", min_.data(), Type::Float64, {size_}},
            {"max", max_.data(), Type::Float64, {size_}}};
}

} // namespace melissa::stats
