// SPDX-License-Identifier: BSD-3-Clause
#include <cmath>
#include <limits>

#include "../huge_pages.hpp"
#include "melissa/stats.hpp"
#include "tiling.hpp"

namespace melissa::stats {
namespace {

/// The shift of a cell whose first value is `first`: the nearest float. Beyond float's range, 0
/// rather than the largest float: no float is near such values, and with 0 the running mean is
/// theirs, returned as it is, not the sum of two huge numbers; the cast alone would give an
/// infinite shift and NaN moments.
template <class T> float shift_of(T first) {
    return std::abs(first) <= std::numeric_limits<float>::max() ? static_cast<float>(first) : 0.0f;
}

// One Welford/Pebay step of `n` cells with their value x; `count` is the count after the step.
template <int Order, class T>
MELISSA_KERNEL void moments_step(const float *__restrict shift, double *__restrict mean,
                                 double *__restrict m2, double *__restrict m3,
                                 double *__restrict m4, const T *__restrict x, std::size_t n,
                                 double count) {
    const double inv = 1.0 / count;
    const double before = count - 1.0;
    const double c3 = count - 2.0;
    const double c4 = count * count - 3.0 * count + 3.0;
    for (std::size_t i = 0; i < n; ++i) {
        double shifted = static_cast<double>(x[i]);
        if constexpr (Order >= 2)
            shifted -= static_cast<double>(shift[i]);
        const double delta = shifted - mean[i];
        const double delta_n = delta * inv;
        mean[i] += delta_n;
        if constexpr (Order >= 2) {
            const double term = delta * delta_n * before;
            if constexpr (Order >= 4)
                m4[i] += term * delta_n * delta_n * c4 + 6.0 * delta_n * delta_n * m2[i] -
                         4.0 * delta_n * m3[i];
            if constexpr (Order >= 3)
                m3[i] += term * delta_n * c3 - 3.0 * delta_n * m2[i];
            m2[i] += term;
        }
    }
}

template <int Order, class T>
void moments_update(float *shift, double *mean, double *m2, double *m3, double *m4,
                    std::size_t size, std::uint64_t count, const T *fields, std::size_t n_fields) {
    detail::for_each_tile(size, size * n_fields, [&](std::size_t begin, std::size_t end) {
        // The first field sets the shifts (stats.hpp) and the means of the shifted values, the
        // central sums staying 0: per tile rather than tested per value, so that the step stays
        // a branch-free vector loop, and not as a step, whose products of a value far from its
        // shift (beyond float's range) would overflow to inf times 0.
        std::size_t first = 0;
        if (count == 0) {
            for (std::size_t i = begin; i < end; ++i) {
                mean[i] = static_cast<double>(fields[i]);
                if constexpr (Order >= 2) {
                    shift[i] = shift_of(fields[i]);
                    mean[i] -= static_cast<double>(shift[i]);
                }
            }
            first = 1;
        }
        for (std::size_t f = first; f < n_fields; ++f)
            moments_step<Order>(shift + begin, mean + begin, m2 + begin, m3 + begin, m4 + begin,
                                fields + f * size + begin, end - begin,
                                static_cast<double>(count + f + 1));
    });
}

} // namespace

Moments::Moments(std::size_t size, int order) : size_(size), order_(order) {
    detail::require(order >= 1 && order <= 4,
                    "Moments: order must be 1, 2, 3 or 4, got " + std::to_string(order));
    mean_.assign(size, 0.0);
    // The shift and unused higher moments stay empty; their kernels never touch them.
    if (order >= 2) {
        shift_.assign(size, 0.0f);
        m2_.assign(size, 0.0);
    }
    if (order >= 3)
        m3_.assign(size, 0.0);
    if (order >= 4)
        m4_.assign(size, 0.0);
}

template <class T> void Moments::update_impl(const T *fields, std::size_t n_fields) {
    if (n_fields == 0)
        return; // no first field to take the shifts from
    float *shift = shift_.data();
    double *mean = mean_.data(), *m2 = m2_.data(), *m3 = m3_.data(), *m4 = m4_.data();
    switch (order_) {
    case 1:
        moments_update<1>(shift, mean, m2, m3, m4, size_, count_, fields, n_fields);
        break;
    case 2:
        moments_update<2>(shift, mean, m2, m3, m4, size_, count_, fields, n_fields);
        break;
    case 3:
        moments_update<3>(shift, mean, m2, m3, m4, size_, count_, fields, n_fields);
        break;
    default:
        moments_update<4>(shift, mean, m2, m3, m4, size_, count_, fields, n_fields);
    }
    count_ += n_fields;
}

void Moments::update(const float *fields, std::size_t n_fields) { update_impl(fields, n_fields); }
void Moments::update(const double *fields, std::size_t n_fields) { update_impl(fields, n_fields); }

void Moments::merge(const Moments &other) {
    detail::require_same_size(size_, other.size_, "Moments.merge");
    detail::require(order_ == other.order_, "Moments.merge: cannot merge order " +
                                                std::to_string(other.order_) + " into order " +
                                                std::to_string(order_));
    if (other.count_ == 0)
        return;
    if (count_ == 0) {
        *this = other;
        return;
    }
    const double na = static_cast<double>(count_), nb = static_cast<double>(other.count_);
    const double n = na + nb;
    const detail::MergeWeights w(count_, other.count_);
    const double w3 = na * nb * (na - nb) / (n * n);
    const double w4 = na * nb * (na * na - na * nb + nb * nb) / (n * n * n);
    const int order = order_;
    const float *shift = shift_.data();
    double *mean = mean_.data(), *m2 = m2_.data(), *m3 = m3_.data(), *m4 = m4_.data();
    const float *oshift = other.shift_.data();
    const double *omean = other.mean_.data(), *om2 = other.m2_.data(), *om3 = other.m3_.data(),
                 *om4 = other.m4_.data();
    detail::for_each_tile(size_, size_, [&](std::size_t begin, std::size_t end) {
        for (std::size_t i = begin; i < end; ++i) {
            // Two floats within a factor 2^29 of each other, as the shifts of one cell's data
            // are, differ by a double exactly: the other's mean moves onto this shift without
            // the offset's rounding.
            const double shifts =
                order < 2 ? 0.0 : static_cast<double>(oshift[i]) - static_cast<double>(shift[i]);
            const double delta = shifts + (omean[i] - mean[i]);
            mean[i] += delta * w.other_share;
            if (order < 2)
                continue;
            const double d2 = delta * delta;
            if (order >= 4)
                m4[i] += om4[i] + d2 * d2 * w4 +
                         6.0 * d2 * (na * na * om2[i] + nb * nb * m2[i]) / (n * n) +
                         4.0 * delta * (na * om3[i] - nb * m3[i]) / n;
            if (order >= 3)
                m3[i] += om3[i] + d2 * delta * w3 + 3.0 * delta * (na * om2[i] - nb * m2[i]) / n;
            m2[i] += om2[i] + d2 * w.cross;
        }
    });
    count_ += other.count_;
}

void Moments::mean(double *out) const {
    for (std::size_t i = 0; i < size_; ++i)
        out[i] = count_ == 0 ? detail::nan() : (order_ < 2 ? 0.0 : shift_[i]) + mean_[i];
}

void Moments::variance(double *out, int ddof) const {
    detail::require(order_ >= 2, "Moments.variance: needs order >= 2, this one has order " +
                                     std::to_string(order_));
    detail::require(ddof >= 0, "Moments.variance: ddof must be >= 0, got " + std::to_string(ddof));
    const double dof = static_cast<double>(count_) - ddof;
    for (std::size_t i = 0; i < size_; ++i)
        out[i] = dof > 0 ? m2_[i] / dof : detail::nan();
}

void Moments::skewness(double *out) const {
    detail::require(order_ >= 3, "Moments.skewness: needs order >= 3, this one has order " +
                                     std::to_string(order_));
    const double n = static_cast<double>(count_);
    for (std::size_t i = 0; i < size_; ++i)
        out[i] = m2_[i] > 0 ? std::sqrt(n) * m3_[i] / std::pow(m2_[i], 1.5) : detail::nan();
}

void Moments::kurtosis(double *out) const {
    detail::require(order_ >= 4, "Moments.kurtosis: needs order 4, this one has order " +
                                     std::to_string(order_));
    const double n = static_cast<double>(count_);
    for (std::size_t i = 0; i < size_; ++i)
        out[i] = m2_[i] > 0 ? n * m4_[i] / (m2_[i] * m2_[i]) - 3.0 : detail::nan();
}

std::vector<StateArray> Moments::state() {
    using Type = StateArray::Type;
    std::vector<StateArray> arrays{{"count", &count_, Type::UInt64, {}}};
    if (order_ >= 2)
        arrays.push_back({"shift", shift_.data(), Type::Float32, {size_}});
    arrays.push_back({"mean", mean_.data(), Type::Float64, {size_}});
    detail::StateVector *higher[] = {&m2_, &m3_, &m4_};
    for (int k = 2; k <= order_; ++k)
        arrays.push_back({"m" + std::to_string(k), higher[k - 2]->data(), Type::Float64, {size_}});
    return arrays;
}

namespace detail {

void *allocate_state(std::size_t bytes) { return huge_pages::allocate(bytes); }

void free_state(void *data, std::size_t bytes) noexcept { huge_pages::release(data, bytes); }

} // namespace detail
} // namespace melissa::stats
