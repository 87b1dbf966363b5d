// SPDX-License-Identifier: BSD-3-Clause
#include <algorithm>
#include <cmath>

#include "melissa/stats.hpp"
#include "tiling.hpp"

namespace melissa::stats {
namespace {

// Probabilities updated in one pass over a chunk: each loads x and the step once for all of them,
// and their arrays stream from memory side by side rather than one pair after the other, which
// kept too few misses in flight to reach the bandwidth (bench/RESULTS.md).
constexpr std::size_t kFusedProbabilities = 4;

/// The Robbins-Monro step of NP probabilities, whose arrays lie `stride` apart, for n cells.
/// Inlined always, so that it is compiled for the instruction set of its caller's clone.
template <std::size_t NP, class T>
[[gnu::always_inline]] inline void
probabilities_step(double *__restrict iterate, double *__restrict average, std::size_t stride,
                   const double *__restrict probabilities, const double *__restrict step,
                   const T *__restrict x, std::size_t n, double inv) {
    for (std::size_t i = 0; i < n; ++i) {
        const double v = static_cast<double>(x[i]);
        for (std::size_t k = 0; k < NP; ++k) {
            double &q = iterate[k * stride + i], &a = average[k * stride + i];
            const double below = v <= q ? 1.0 : 0.0;
            q -= step[i] * (below - probabilities[k]);
            a += (q - a) * inv;
        }
    }
}

/// One value x of each of n <= kChunkCells cells: advances the cell's running scale, then the
/// iterates and averages of its n_probs probabilities, whose arrays lie `stride` apart.
template <class T>
MELISSA_KERNEL void
quantiles_step(double *__restrict mean, double *__restrict m2, double *__restrict iterate,
               double *__restrict average, std::size_t stride, const double *probabilities,
               std::size_t n_probs, const T *__restrict x, std::size_t n, double count) {
    const double inv = 1.0 / count;
    const double gain = Quantiles::kStepScale / std::pow(count, Quantiles::kStepExponent);
    double step[detail::kChunkCells];
    for (std::size_t i = 0; i < n; ++i) {
        const double v = static_cast<double>(x[i]);
        const double delta = v - mean[i];
        mean[i] += delta * inv;
        m2[i] += delta * (v - mean[i]);
        step[i] = gain * std::sqrt(m2[i] * inv);
    }
    if (count == 1.0) { // the first value initialises every iterate (stats.hpp)
        for (std::size_t p = 0; p < n_probs; ++p)
            for (std::size_t i = 0; i < n; ++i)
                iterate[p * stride + i] = average[p * stride + i] = static_cast<double>(x[i]);
        return;
    }
    for (std::size_t p = 0; p < n_probs; p += kFusedProbabilities) {
        double *it = iterate + p * stride, *av = average + p * stride;
        const double *probs = probabilities + p;
        switch (std::min(n_probs - p, kFusedProbabilities)) {
        case 1:
            probabilities_step<1>(it, av, stride, probs, step, x, n, inv);
            break;
        case 2:
            probabilities_step<2>(it, av, stride, probs, step, x, n, inv);
            break;
        case 3:
            probabilities_step<3>(it, av, stride, probs, step, x, n, inv);
            break;
        default:
            probabilities_step<4>(it, av, stride, probs, step, x, n, inv);
        }
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
                    quantiles_step(mean + first, m2 + first, iterate + first, average + first, size,
                                   probs, n_probs, fields + f * size + first, last - first, seen);
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
