// SPDX-License-Identifier: BSD-3-Clause
#include <cmath>

#include "melissa/stats.hpp"
#include "tiling.hpp"

namespace melissa::stats {
namespace {

// Welford step of one variable; writes the deviation from the old mean, which the comoments of
// this variable with the C_k need.
template <class T>
MELISSA_KERNEL void variable_step(double *__restrict mean, double *__restrict m2,
                                  double *__restrict deviation, const T *__restrict x,
                                  std::size_t n, double inv) {
    for (std::size_t i = 0; i < n; ++i) {
        const double v = static_cast<double>(x[i]);
        const double delta = v - mean[i];
        mean[i] += delta * inv;
        m2[i] += delta * (v - mean[i]);
        deviation[i] = delta;
    }
}

template <class T>
MELISSA_KERNEL void
mixed_step(double *__restrict mean_c, double *__restrict m2_c, double *__restrict comoment_bc,
           double *__restrict comoment_ac, const double *__restrict deviation_a,
           const double *__restrict deviation_b, const T *__restrict c, std::size_t n, double inv) {
    for (std::size_t i = 0; i < n; ++i) {
        const double v = static_cast<double>(c[i]);
        const double delta = v - mean_c[i];
        mean_c[i] += delta * inv;
        const double after = v - mean_c[i];
        m2_c[i] += delta * after;
        comoment_bc[i] += deviation_b[i] * after;
        comoment_ac[i] += deviation_a[i] * after;
    }
}

} // namespace

Sobol::Sobol(std::size_t size, std::size_t n_params)
    : size_(size), n_params_(n_params), mean_a_(size, 0.0), mean_b_(size, 0.0), m2_a_(size, 0.0),
      m2_b_(size, 0.0), mean_c_(n_params * size, 0.0), m2_c_(n_params * size, 0.0),
      comoment_bc_(n_params * size, 0.0), comoment_ac_(n_params * size, 0.0) {
    detail::require(n_params >= 1, "Sobol: n_params must be at least 1");
}

template <class T> void Sobol::update_impl(const T *groups, std::size_t n_groups) {
    const std::size_t size = size_, n_params = n_params_, fields_per_group = n_params + 2;
    const std::uint64_t count = count_;
    double *ma = mean_a_.data(), *mb = mean_b_.data(), *m2a = m2_a_.data(), *m2b = m2_b_.data(),
           *mc = mean_c_.data(), *m2c = m2_c_.data(), *cbc = comoment_bc_.data(),
           *cac = comoment_ac_.data();
    detail::for_each_tile(
        size, size * n_groups * fields_per_group, [&](std::size_t begin, std::size_t end) {
            for (std::size_t g = 0; g < n_groups; ++g) {
                const T *group = groups + g * fields_per_group * size;
                const double inv = 1.0 / static_cast<double>(count + g + 1);
                detail::for_each_chunk(begin, end, [&](std::size_t first, std::size_t last) {
                    double deviation_a[detail::kChunkCells], deviation_b[detail::kChunkCells];
                    const std::size_t n = last - first;
                    variable_step(ma + first, m2a + first, deviation_a, group + first, n, inv);
                    variable_step(mb + first, m2b + first, deviation_b, group + size + first, n,
                                  inv);
                    for (std::size_t k = 0; k < n_params; ++k) {
                        const std::size_t at = k * size + first;
                        mixed_step(mc + at, m2c + at, cbc + at, cac + at, deviation_a, deviation_b,
                                   group + (k + 2) * size + first, n, inv);
                    }
                });
            }
        });
    count_ += n_groups;
}

void Sobol::update(const float *groups, std::size_t n_groups) { update_impl(groups, n_groups); }
void Sobol::update(const double *groups, std::size_t n_groups) { update_impl(groups, n_groups); }

void Sobol::merge(const Sobol &other) {
    detail::require_same_size(size_, other.size_, "Sobol.merge");
    detail::require(n_params_ == other.n_params_,
                    "Sobol.merge: cannot merge " + std::to_string(other.n_params_) +
                        " parameters into " + std::to_string(n_params_));
    if (other.count_ == 0)
        return;
    if (count_ == 0) {
        *this = other;
        return;
    }
    const detail::MergeWeights w(count_, other.count_);
    const std::size_t size = size_, n_params = n_params_;
    detail::for_each_tile(size, size * (n_params + 2), [&](std::size_t begin, std::size_t end) {
        detail::for_each_chunk(begin, end, [&](std::size_t first, std::size_t last) {
            double delta_a[detail::kChunkCells], delta_b[detail::kChunkCells];
            for (std::size_t i = first; i < last; ++i) {
                delta_a[i - first] = detail::merge_variable(mean_a_[i], m2_a_[i], other.mean_a_[i],
                                                            other.m2_a_[i], w);
                delta_b[i - first] = detail::merge_variable(mean_b_[i], m2_b_[i], other.mean_b_[i],
                                                            other.m2_b_[i], w);
            }
            for (std::size_t k = 0; k < n_params; ++k)
                for (std::size_t i = first; i < last; ++i) {
                    const std::size_t at = k * size + i;
                    const double delta_c = detail::merge_variable(
                        mean_c_[at], m2_c_[at], other.mean_c_[at], other.m2_c_[at], w);
                    detail::merge_comoment(comoment_bc_[at], other.comoment_bc_[at],
                                           delta_b[i - first], delta_c, w);
                    detail::merge_comoment(comoment_ac_[at], other.comoment_ac_[at],
                                           delta_a[i - first], delta_c, w);
                }
        });
    });
    count_ += other.count_;
}

void Sobol::first_order(double *out) const {
    for (std::size_t k = 0; k < n_params_; ++k)
        for (std::size_t i = 0; i < size_; ++i) {
            const std::size_t at = k * size_ + i;
            out[at] = comoment_bc_[at] / std::sqrt(m2_b_[i] * m2_c_[at]);
        }
}

void Sobol::total_order(double *out) const {
    for (std::size_t k = 0; k < n_params_; ++k)
        for (std::size_t i = 0; i < size_; ++i) {
            const std::size_t at = k * size_ + i;
            out[at] = 1.0 - comoment_ac_[at] / std::sqrt(m2_a_[i] * m2_c_[at]);
        }
}

std::vector<StateArray> Sobol::state() {
    using Type = StateArray::Type;
    const std::vector<std::size_t> cells{size_}, per_param{n_params_, size_};
    return {{"count", &count_, Type::UInt64, {}},
            {"mean_a", mean_a_.data(), Type::Float64, cells},
            {"mean_b", mean_b_.data(), Type::Float64, cells},
            {"m2_a", m2_a_.data(), Type::Float64, cells},
            {"m2_b", m2_b_.data(), Type::Float64, cells},
            {"mean_c", mean_c_.data(), Type::Float64, per_param},
            {"m2_c", m2_c_.data(), Type::Float64, per_param},
            {"comoment_bc", comoment_bc_.data(), Type::Float64, per_param},
            {"comoment_ac", comoment_ac_.data(), Type::Float64, per_param}};
}

} // namespace melissa::stats
