// SPDX-License-Identifier: BSD-3-Clause
//
// Iterative per-cell statistics: the kernels the statistics server applies to every field of every
// time step. Each accumulator keeps O(1) state per cell, is updated from one field (a flat
// array of `size` cells) or a batch of fields laid out one after the other, and merges with another
// accumulator of the same cells, so that threads, server ranks and checkpoints combine.
//
// Conventions shared by every accumulator:
// - Input values are float or double; state is double, but for the moments' shifts (float).
// - NaN is not skipped: a NaN value makes that cell's moments, extrema, quantiles and covariance
//   NaN from then on, and never counts as exceeding a threshold. In a Sobol group it makes NaN the
//   indices that use its field: y_A every total order, y_B every first order, y_Ck both indices
//   of parameter k.
// - An accumulator is not safe to update from two threads at once; give each thread its own and
//   merge them.
// - Size mismatches throw std::invalid_argument.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "melissa/stats_export.h"

namespace melissa::stats {

/// Number of threads the kernels may use for one large update (default: MELISSA_NUM_THREADS, else
/// the cores in the process's affinity mask). Small updates always run on the calling thread.
MELISSA_STATS_EXPORT void set_num_threads(int n);
MELISSA_STATS_EXPORT int get_num_threads();

/// A view of one array of an accumulator's state, for checkpoints: writing through `data` and
/// reading it back must round-trip the accumulator exactly.
struct StateArray {
    enum class Type { Float64, UInt64, Float32 };
    std::string name;
    void *data;
    Type type;
    std::vector<std::size_t> shape; // empty for a scalar

    std::size_t value_bytes() const { return type == Type::Float32 ? 4 : 8; }
};

namespace detail {

/// Memory for the accumulators' state arrays, which every update streams through: aligned to
/// cache lines (malloc starts large arrays 16 bytes past one, so that half of a kernel's 32-byte
/// accesses straddle two lines) and, from 4 MiB on, in huge pages, as numpy's arrays are (a few
/// TLB entries cover a whole array). bench/RESULTS.md measures what they save.
MELISSA_STATS_EXPORT void *allocate_state(std::size_t bytes);
MELISSA_STATS_EXPORT void free_state(void *data, std::size_t bytes) noexcept;

template <class T> struct StateAllocator {
    using value_type = T;

    StateAllocator() = default;
    template <class U> StateAllocator(const StateAllocator<U> &) noexcept {}

    T *allocate(std::size_t n) { return static_cast<T *>(allocate_state(n * sizeof(T))); }
    void deallocate(T *data, std::size_t n) noexcept { free_state(data, n * sizeof(T)); }

    template <class U> bool operator==(const StateAllocator<U> &) const noexcept { return true; }
    template <class U> bool operator!=(const StateAllocator<U> &) const noexcept { return false; }
};

template <class T> using StateVectorOf = std::vector<T, StateAllocator<T>>;
using StateVector = StateVectorOf<double>;

} // namespace detail

/// Mean and central moments up to `order` (1 to 4) by Welford's update and Pebay's pairwise merge.
///
/// Each cell accumulates its values minus a shift, the first value it sees rounded to float: that
/// difference is exact for data near the shift (Sterbenz) and the running mean of the shifted
/// values stays of the order of the data's spread plus the shift's rounding (2^-24 of the offset
/// at most), so that its rounding is relative to that, not to the data's offset. A float, not a
/// double: the update is memory-bound, and 8 bytes per cell would add a fifth to what an order-2
/// update streams. A merge keeps this accumulator's shifts and moves the other's mean onto them.
/// Order 1 keeps no shift: the running mean alone is as accurate as a two-pass one at any
/// offset, its rounding being relative to the offset anyway, and the shift would add a sixth to
/// the bytes its update streams (a fifth for float input).
class MELISSA_STATS_EXPORT Moments {
  public:
    Moments(std::size_t size, int order = 4);

    void update(const float *fields, std::size_t n_fields);
    void update(const double *fields, std::size_t n_fields);
    void merge(const Moments &other);

    std::size_t size() const { return size_; }
    int order() const { return order_; }
    std::uint64_t count() const { return count_; }

    /// The shift plus the mean of the shifted values.
    void mean(double *out) const;
    /// Sum of squared deviations over (count - ddof).
    void variance(double *out, int ddof) const;
    /// Biased sample skewness m3 / m2^1.5 (scipy.stats.skew with bias=True); NaN where m2 is 0.
    void skewness(double *out) const;
    /// Biased excess kurtosis m4 / m2^2 - 3 (scipy.stats.kurtosis defaults); NaN where m2 is 0.
    void kurtosis(double *out) const;

    /// count, shift (from order 2), mean (of the values minus the shift), m2 ... m{order}
    /// (central sums).
    std::vector<StateArray> state();

  private:
    template <class T> void update_impl(const T *fields, std::size_t n_fields);

    std::size_t size_;
    int order_;
    std::uint64_t count_ = 0;
    detail::StateVectorOf<float> shift_;
    detail::StateVector mean_, m2_, m3_, m4_;
};

/// Running minimum and maximum.
class MELISSA_STATS_EXPORT Extrema {
  public:
    explicit Extrema(std::size_t size);

    void update(const float *fields, std::size_t n_fields);
    void update(const double *fields, std::size_t n_fields);
    void merge(const Extrema &other);

    std::size_t size() const { return size_; }
    std::uint64_t count() const { return count_; }
    /// NaN before the first update.
    void min(double *out) const;
    void max(double *out) const;

    std::vector<StateArray> state();

  private:
    template <class T> void update_impl(const T *fields, std::size_t n_fields);

    std::size_t size_;
    std::uint64_t count_ = 0;
    std::vector<double> min_, max_;
};

/// For each threshold t, how many values of each cell were strictly greater than t.
class MELISSA_STATS_EXPORT ThresholdExceedance {
  public:
    ThresholdExceedance(std::size_t size, std::vector<double> thresholds);

    void update(const float *fields, std::size_t n_fields);
    void update(const double *fields, std::size_t n_fields);
    void merge(const ThresholdExceedance &other);

    std::size_t size() const { return size_; }
    std::uint64_t count() const { return count_; }
    const std::vector<double> &thresholds() const { return thresholds_; }
    /// Row-major (thresholds, size).
    const std::uint64_t *counts() const { return counts_.data(); }

    std::vector<StateArray> state();

  private:
    template <class T> void update_impl(const T *fields, std::size_t n_fields);

    std::size_t size_;
    std::uint64_t count_ = 0;
    std::vector<double> thresholds_;
    std::vector<std::uint64_t> counts_;
};

/// Quantiles by Robbins-Monro stochastic approximation with Polyak-Ruppert averaging.
///
/// After the n-th value x of a cell, each iterate q of probability p moves by
///     q <- q - gamma_n * (1{x <= q} - p),   gamma_n = kStepScale * sigma_n / n^kStepExponent
/// where sigma_n is the cell's running standard deviation (so the step has the data's units and
/// scale), and the estimate returned is the running average of the iterates. The first value
/// initialises every iterate. Not mergeable: the estimate depends on the order of the values.
class MELISSA_STATS_EXPORT Quantiles {
  public:
    static constexpr double kStepScale = 3.0;
    static constexpr double kStepExponent = 0.6;

    Quantiles(std::size_t size, std::vector<double> probabilities);

    void update(const float *fields, std::size_t n_fields);
    void update(const double *fields, std::size_t n_fields);

    std::size_t size() const { return size_; }
    std::uint64_t count() const { return count_; }
    const std::vector<double> &probabilities() const { return probabilities_; }
    /// Row-major (probabilities, size).
    const double *quantiles() const { return average_.data(); }

    std::vector<StateArray> state();

  private:
    template <class T> void update_impl(const T *fields, std::size_t n_fields);

    std::size_t size_;
    std::uint64_t count_ = 0;
    std::vector<double> probabilities_;
    detail::StateVector mean_, m2_;         // running scale of each cell
    detail::StateVector iterate_, average_; // (probabilities, size)
};

/// Covariance and correlation of two fields, cell by cell.
class MELISSA_STATS_EXPORT Covariance {
  public:
    explicit Covariance(std::size_t size);

    void update(const float *x, const float *y, std::size_t n_fields);
    void update(const double *x, const double *y, std::size_t n_fields);
    void merge(const Covariance &other);

    std::size_t size() const { return size_; }
    std::uint64_t count() const { return count_; }
    void covariance(double *out, int ddof) const;
    void correlation(double *out) const;

    std::vector<StateArray> state();

  private:
    template <class T> void update_impl(const T *x, const T *y, std::size_t n_fields);

    std::size_t size_;
    std::uint64_t count_ = 0;
    std::vector<double> mean_x_, mean_y_, m2_x_, m2_y_, comoment_;
};

/// First- and total-order Sobol indices by the Martinez (correlation) estimator.
///
/// A group holds n_params + 2 fields in this order: y_A, y_B, y_C1 ... y_Cp, where C_k equals A
/// except for parameter k, taken from B. Then S_k = corr(y_B, y_Ck) and ST_k = 1 - corr(y_A, y_Ck).
///
/// Besides the means, each cell keeps the central sums up to order 4 of y_A, y_B and y_Ck alone
/// and of the pairs (y_B, y_Ck) and (y_A, y_Ck): the moments the delta-method variance of a
/// correlation needs for outputs of any distribution, from which melissa.stats builds the
/// confidence intervals. A new group and a merge are both Pebay's combination of central sums.
class MELISSA_STATS_EXPORT Sobol {
  public:
    Sobol(std::size_t size, std::size_t n_params);

    /// `groups` holds n_groups groups of n_params + 2 fields of `size` cells each.
    void update(const float *groups, std::size_t n_groups);
    void update(const double *groups, std::size_t n_groups);
    void merge(const Sobol &other);

    std::size_t size() const { return size_; }
    std::size_t n_params() const { return n_params_; }
    std::size_t group_size() const { return n_params_ + 2; }
    std::uint64_t count() const { return count_; }
    /// Row-major (n_params, size): corr(y_B, y_Ck).
    void first_order(double *out) const;
    /// Row-major (n_params, size): 1 - corr(y_A, y_Ck).
    void total_order(double *out) const;

    /// The arrays, each (size) for y_A and y_B or (n_params, size) for y_Ck and the pairs:
    /// mean_x and m{p}_x = sum of (x - mean_x)^p for x = a, b, c, p = 2, 3, 4; comoment_xc
    /// and m{i}{j}_xc = sum of (x - mean_x)^i (y_Ck - mean_c)^j for x = b, a.
    std::vector<StateArray> state();

  private:
    template <class T> void update_impl(const T *groups, std::size_t n_groups);

    /// Mean and central sums of one variable, (size) or (n_params, size).
    struct Variable {
        std::vector<double> mean, m2, m3, m4;
    };
    /// Mixed central sums m_ij of (x, y_Ck), (n_params, size); m11 is the comoment.
    struct Pair {
        std::vector<double> m11, m21, m12, m22, m31, m13;
    };

    std::size_t size_, n_params_;
    std::uint64_t count_ = 0;
    Variable a_, b_, c_;
    Pair bc_, ac_;
};

} // namespace melissa::stats
