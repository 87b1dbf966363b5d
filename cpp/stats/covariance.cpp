// SPDX-License-Identifier: BSD-3-Clause
#include <cmath>

#include "melissa/stats.hpp"
#include "tiling.hpp"

namespace melissa::stats {
namespace {

template <class T>
MELISSA_KERNEL void covariance_step(double *__restrict mean_x, double *__restrict mean_y,
                                    double *__restrict m2_x, double *__restrict m2_y,
                                    double *__restrict comoment, const T *__restrict x,
                                    const T *__restrict y, std::size_t n, double count) {
    const double inv = 1.0 / count;
    for (std::size_t i = 0; i < n; ++i) {
        const double vx = static_cast<double>(x[i]), vy = static_cast<double>(y[i]);
        const double dx = vx - mean_x[i], dy = vy - mean_y[i];
        mean_x[i] += dx * inv;
        mean_y[i] += dy * inv;
        const double ex = vx - mean_x[i], ey = vy - mean_y[i];
        m2_x[i] += dx * ex;
        m2_y[i] += dy * ey;
        comoment[i] += dx * ey;
    }
}

} // namespace

Covariance::Covariance(std::size_t size)
    : size_(size), mean_x_(size, 0.0), mean_y_(size, 0.0), m2_x_(size, 0.0), m2_y_(size, 0.0),
      comoment_(size, 0.0) {}

template <class T> void Covariance::update_impl(const T *x, const T *y, std::size_t n_fields) {
    const std::size_t size = size_;
    const std::uint64_t count = count_;
    double *mx = mean_x_.data(), *my = mean_y_.data(), *m2x = m2_x_.data(), *m2y = m2_y_.data(),
           *cxy = comoment_.data();
    detail::for_each_tile(size, size * n_fields * 2, [&](std::size_t begin, std::size_t end) {
        for (std::size_t f = 0; f < n_fields; ++f)
            covariance_step(mx + begin, my + begin, m2x + begin, m2y + begin, cxy + begin,
                            x + f * size + begin, y + f * size + begin, end - begin,
                            static_cast<double>(count + f + 1));
    });
    count_ += n_fields;
}

void Covariance::update(const float *x, const float *y, std::size_t n_fields) {
    update_impl(x, y, n_fields);
}
void Covariance::update(const double *x, const double *y, std::size_t n_fields) {
    update_impl(x, y, n_fields);
}

void Covariance::merge(const Covariance &other) {
    detail::require_same_size(size_, other.size_, "Covariance.merge");
    if (other.count_ == 0)
        return;
    if (count_ == 0) {
        *this = other;
        return;
    }
    const detail::MergeWeights w(count_, other.count_);
    for (std::size_t i = 0; i < size_; ++i) {
        const double dx =
            detail::merge_variable(mean_x_[i], m2_x_[i], other.mean_x_[i], other.m2_x_[i], w);
        const double dy =
            detail::merge_variable(mean_y_[i], m2_y_[i], other.mean_y_[i], other.m2_y_[i], w);
        detail::merge_comoment(comoment_[i], other.comoment_[i], dx, dy, w);
    }
    count_ += other.count_;
}

void Covariance::covariance(double *out, int ddof) const {
    detail::require(ddof >= 0,
                    "Covariance.covariance: ddof must be >= 0, got " + std::to_string(ddof));
    const double dof = static_cast<double>(count_) - ddof;
    for (std::size_t i = 0; i < size_; ++i)
        out[i] = dof > 0 ? comoment_[i] / dof : detail::nan();
}

void Covariance::correlation(double *out) const {
    for (std::size_t i = 0; i < size_; ++i)
        out[i] = comoment_[i] / std::sqrt(m2_x_[i] * m2_y_[i]);
}

std::vector<StateArray> Covariance::state() {
    using Type = StateArray::Type;
    return {{"count", &count_, Type::UInt64, {}},
            {"mean_x", mean_x_.data(), Type::Float64, {size_}},
            {"mean_y", mean_y_.data(), Type::Float64, {size_}},
            {"m2_x", m2_x_.data(), Type::Float64, {size_}},
            {"m2_y", m2_y_.data(), Type::Float64, {size_}},
            {"comoment", comoment_.data(), Type::Float64, {size_}}};
}

} // namespace melissa::stats
