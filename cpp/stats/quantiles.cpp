// SPDX-License-Identifier: BSD-3-Clause
#include <cmath>

#include "melissa/stats.hpp"
#include "tiling.hpp"

namespace melissa::stats {
namespace {

// Advances each cell's running scale and writes the Robbins-Monro step gamma_n of every cell.
template <class T>
MELISSA_KERNEL void scale_step(double *__restrict mean, double *__restrict m2,
                               double *__restrict step, const T *__restrict x, std::size_t n,
                               double count) {
    const double inv = 1.0 / count;
    const double gain = Quantiles::kStepScale / std::pow(count, Quantiles::kStepExponent);
    for (std::size_t i = 0; i < n; ++i) {
        const double v = static_cast<double>(x[i]);
        const double delta = v - mean[i];
        mean[i] += delta * inv;
        m2[i] += delta * (v - mean[i]);
        step[i] = gain * std::sqrt(m2[i] * inv);
    }
}

template <class T>
MELISSA_KERNEL void quantile_step(double *__restrict iterate, double *__restrict average,
                                  const double *__restrict step, const T *__restrict x,
                                  std::size_t n, double probability, double count) {
    const double inv = 1.0 / count;
    for (std::size_t i = 0; i < n; ++i) {
        const double v = static_cast<double>(x[i]);
        const double below = v <= iterate[i] ? 1.0 : 0.0;
        iterate[i] -= step[i] * (below - probability);
        average[i] += (iterate[i] - average[i]) * inv;
    }
}

} // namespace

Quantiles::Quantiles(std::size_t size, std::vector<double> probabilities)
    : size_(size), probabilities_(std::move(probabilities)), mean_(size, 0.0), m2_(size, 0.0),
      iterate_(probabilities_.size() * size, 0.0), average_(probabilities_.size() * size, 0.0) {
    for (double p : probabilities_)
        detail::require(p > 0.0 && p < 1.0,
                        "Quantiles: probabilities must lie strictly between 0 and 1, got " +
                            std::to_string(p));
}

template <class T> void Quantiles::update_impl(const T *fields, std::size_t n_fields) {
    const std::size_t size = size_, n_probs = probabilities_.size();
    double *mean = mean_.data(), *m2 = m2_.data(), *iterate = iterate_.data(),
           *average = average_.data();
    const double *probs = probabilities_.data();
    const std::uint64_t count = count_;
    detail::for_each_tile(
        size, size * n_fields * (n_probs + 1), [&](std::size_t begin, std::size_t end) {
            for (std::size_t f = 0; f < n_fields; ++f) {
                const double seen = static_cast<double>(count + f + 1);
                detail::for_each_chunk(begin, end, [&](std::size_t first, std::size_t last) {
                    double step[detail::kChunkCells];
                    const std::size_t n = last - first;
                    const T *x = fields + f * size + first;
                    scale_step(mean + first, m2 + first, step, x, n, seen);
                    for (std::size_t p = 0; p < n_probs; ++p) {
                        double *it = iterate + p * size + first, *av = average + p * size + first;
                        if (seen == 1.0) {
                            for (std::size_t i = 0; i < n; ++i)
                                it[i] = av[i] = static_cast<double>(x[i]);
                        } else {
                            quantile_step(it, av, step, x, n, probs[p], seen);
                        }
                    }
                });
            }
        });
    count_ += n_fields;
}

void Quantiles::update(const float *fields, std::size_t n_fields) { update_impl(fields, n_fields); }
void Quantiles::update(const double *fields, std::size_t n_fields) {
    update_impl(fields, n_fields);
}

std::vector<StateArray> Quantiles::state() {
    using Type = StateArray::Type;
    const std::size_t n_probs = probabilities_.size();
    return {{"count", &count_, Type::UInt64, {}},
            {"mean", mean_.data(), Type::Float64, {size_}},
            {"m2", m2_.data(), Type::Float64, {size_}},
            {"iterate", iterate_.data(), Type::Float64, {n_probs, size_}},
            {"average", average_.data(), Type::Float64, {n_probs, size_}}};
}

} // namespace melissa::stats
