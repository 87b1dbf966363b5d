// SPDX-License-Identifier: BSD-3-Clause
//
// Unit tests of the C++ kernels: references computed by two-pass formulas, merge against
// sequential updates, batches and threads against one field at a time, and the error paths.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "melissa/stats.hpp"

namespace ms = melissa::stats;

namespace {

/// n_fields fields of `size` cells, row after row; cell i has its own mean and spread.
std::vector<double> make_fields(std::size_t n_fields, std::size_t size, unsigned seed,
                                double offset = 0.0) {
    std::mt19937_64 rng(seed);
    std::normal_distribution<double> normal;
    std::vector<double> data(n_fields * size);
    for (std::size_t f = 0; f < n_fields; ++f)
        for (std::size_t i = 0; i < size; ++i)
            data[f * size + i] = offset + 0.1 * i + (1.0 + 0.01 * i) * normal(rng) +
                                 0.3 * normal(rng) * normal(rng); // a skewed, heavy-ish tail
    return data;
}

struct TwoPass {
    std::vector<double> mean, m2, m3, m4;
};

TwoPass two_pass(const std::vector<double> &data, std::size_t n_fields, std::size_t size) {
    TwoPass r{std::vector<double>(size), std::vector<double>(size), std::vector<double>(size),
              std::vector<double>(size)};
    for (std::size_t i = 0; i < size; ++i) {
        double sum = 0;
        for (std::size_t f = 0; f < n_fields; ++f)
            sum += data[f * size + i];
        r.mean[i] = sum / n_fields;
        for (std::size_t f = 0; f < n_fields; ++f) {
            const double d = data[f * size + i] - r.mean[i];
            r.m2[i] += d * d;
            r.m3[i] += d * d * d;
            r.m4[i] += d * d * d * d;
        }
    }
    return r;
}

std::vector<double> result(std::size_t size, void (ms::Moments::*stat)(double *) const,
                           const ms::Moments &m) {
    std::vector<double> out(size);
    (m.*stat)(out.data());
    return out;
}

void expect_near_relative(const std::vector<double> &got, const std::vector<double> &expected,
                          double tolerance) {
    ASSERT_EQ(got.size(), expected.size());
    for (std::size_t i = 0; i < got.size(); ++i)
        EXPECT_NEAR(got[i], expected[i], tolerance * (1.0 + std::abs(expected[i]))) << "cell " << i;
}

/// Every state array of two accumulators, compared bit for bit.
template <class Acc> void expect_same_state(Acc &a, Acc &b) {
    auto sa = a.state(), sb = b.state();
    ASSERT_EQ(sa.size(), sb.size());
    for (std::size_t k = 0; k < sa.size(); ++k) {
        ASSERT_EQ(sa[k].name, sb[k].name);
        ASSERT_EQ(sa[k].type, sb[k].type);
        ASSERT_EQ(sa[k].shape, sb[k].shape);
        std::size_t n = 1;
        for (std::size_t d : sa[k].shape)
            n *= d;
        EXPECT_EQ(std::memcmp(sa[k].data, sb[k].data, n * sa[k].value_bytes()), 0) << sa[k].name;
    }
}

/// Value i of a floating state array.
double value_at(const ms::StateArray &a, std::size_t i) {
    return a.type == ms::StateArray::Type::Float32 ? static_cast<const float *>(a.data)[i]
                                                   : static_cast<const double *>(a.data)[i];
}

/// Every state array of two accumulators, compared to a tolerance relative to the array's largest
/// magnitude: odd moments and comoments are sums that cancel, so a cell's own value is no scale.
template <class Acc> void expect_close_state(Acc &a, Acc &b, double tolerance) {
    auto sa = a.state(), sb = b.state();
    ASSERT_EQ(sa.size(), sb.size());
    for (std::size_t k = 0; k < sa.size(); ++k) {
        std::size_t n = 1;
        for (std::size_t d : sa[k].shape)
            n *= d;
        if (sa[k].type == ms::StateArray::Type::UInt64) {
            EXPECT_EQ(std::memcmp(sa[k].data, sb[k].data, n * 8), 0) << sa[k].name;
            continue;
        }
        double scale = 0;
        for (std::size_t i = 0; i < n; ++i)
            scale = std::max(scale, std::abs(value_at(sb[k], i)));
        for (std::size_t i = 0; i < n; ++i)
            EXPECT_NEAR(value_at(sa[k], i), value_at(sb[k], i), tolerance * scale)
                << sa[k].name << "[" << i << "]";
    }
}

constexpr std::size_t kSize = 1000, kFields = 40;

} // namespace

TEST(Moments, MatchesTwoPassReference) {
    const auto data = make_fields(kFields, kSize, 1);
    ms::Moments m(kSize);
    for (std::size_t f = 0; f < kFields; ++f)
        m.update(data.data() + f * kSize, 1);
    const TwoPass ref = two_pass(data, kFields, kSize);
    std::vector<double> variance(kSize), skew(kSize), kurt(kSize);
    for (std::size_t i = 0; i < kSize; ++i) {
        variance[i] = ref.m2[i] / (kFields - 1);
        const double m2 = ref.m2[i] / kFields;
        skew[i] = ref.m3[i] / kFields / std::pow(m2, 1.5);
        kurt[i] = ref.m4[i] / kFields / (m2 * m2) - 3.0;
    }
    std::vector<double> got_variance(kSize);
    m.variance(got_variance.data(), 1);
    EXPECT_EQ(m.count(), kFields);
    expect_near_relative(result(kSize, &ms::Moments::mean, m), ref.mean, 1e-12);
    expect_near_relative(got_variance, variance, 1e-11);
    expect_near_relative(result(kSize, &ms::Moments::skewness, m), skew, 1e-9);
    expect_near_relative(result(kSize, &ms::Moments::kurtosis, m), kurt, 1e-9);
}

TEST(Moments, AccurateWithLargeOffset) {
    auto data = make_fields(kFields, kSize, 2);
    for (double &v : data)
        v += 1e9;
    // The values minus 1e9 are exact (Sterbenz), so this two-pass reference is of the very data
    // the accumulators see, computed near 0 where float64 has digits to spare.
    auto deviations = data;
    for (double &v : deviations)
        v -= 1e9;
    const TwoPass ref = two_pass(deviations, kFields, kSize);
    std::vector<double> mean(kSize), variance(kSize), skew(kSize), kurt(kSize);
    for (std::size_t i = 0; i < kSize; ++i) {
        mean[i] = 1e9 + ref.mean[i];
        variance[i] = ref.m2[i] / kFields;
        const double m2 = ref.m2[i] / kFields;
        skew[i] = ref.m3[i] / kFields / std::pow(m2, 1.5);
        kurt[i] = ref.m4[i] / kFields / (m2 * m2) - 3.0;
    }
    // Halves with different shifts (their first fields), merged.
    ms::Moments m(kSize), second(kSize);
    m.update(data.data(), kFields / 2);
    second.update(data.data() + kFields / 2 * kSize, kFields - kFields / 2);
    m.merge(second);
    std::vector<double> got(kSize);
    m.variance(got.data(), 0);
    // Without the shift, the running mean's rounding at 1e9 (1.2e-7) cost the variance 1e-7
    // relative; with it, these match the reference as closely as at offset 0.
    expect_near_relative(got, variance, 1e-12);
    expect_near_relative(result(kSize, &ms::Moments::mean, m), mean, 1e-15);
    expect_near_relative(result(kSize, &ms::Moments::skewness, m), skew, 1e-10);
    expect_near_relative(result(kSize, &ms::Moments::kurtosis, m), kurt, 1e-10);
}

TEST(Moments, ShiftIsTheFirstValueAsAFloat) {
    const auto data = make_fields(3, kSize, 20, 1e9);
    ms::Moments m(kSize);
    m.update(data.data(), 3);
    const ms::StateArray shift = m.state()[1];
    ASSERT_EQ(shift.name, "shift");
    ASSERT_EQ(shift.type, ms::StateArray::Type::Float32);
    for (std::size_t i = 0; i < kSize; ++i)
        EXPECT_EQ(static_cast<const float *>(shift.data)[i], static_cast<float>(data[i]));
}

TEST(Moments, ValuesBeyondFloatRangeKeepTheirMoments) {
    // As floats these first values would be infinite shifts, and every moment NaN.
    for (double offset : {1e39, -1e150}) {
        auto data = make_fields(kFields, kSize, 21);
        for (double &v : data)
            v = offset * (1.0 + 1e-3 * v);
        ms::Moments m(kSize, 2);
        m.update(data.data(), kFields);
        const TwoPass ref = two_pass(data, kFields, kSize);
        std::vector<double> variance(kSize), got(kSize);
        for (std::size_t i = 0; i < kSize; ++i)
            variance[i] = ref.m2[i] / kFields;
        m.variance(got.data(), 0);
        expect_near_relative(result(kSize, &ms::Moments::mean, m), ref.mean, 1e-14);
        expect_near_relative(got, variance, 1e-10);
    }
    const std::vector<double> constant(3 * kSize, 1e300);
    ms::Moments m(kSize, 2);
    m.update(constant.data(), 3);
    std::vector<double> variance(kSize);
    m.variance(variance.data(), 1);
    EXPECT_EQ(result(kSize, &ms::Moments::mean, m), std::vector<double>(kSize, 1e300));
    EXPECT_EQ(variance, std::vector<double>(kSize, 0.0));
}

TEST(Moments, BatchEqualsOneFieldAtATime) {
    const auto data = make_fields(kFields, kSize, 3);
    for (int order = 1; order <= 4; ++order) {
        ms::Moments one(kSize, order), batch(kSize, order);
        for (std::size_t f = 0; f < kFields; ++f)
            one.update(data.data() + f * kSize, 1);
        batch.update(data.data(), 7);
        batch.update(data.data() + 7 * kSize, kFields - 7);
        expect_same_state(one, batch);
    }
}

TEST(Moments, MergeEqualsSequential) {
    const auto data = make_fields(kFields, kSize, 4);
    for (int order = 1; order <= 4; ++order) {
        ms::Moments all(kSize, order), left(kSize, order), right(kSize, order);
        all.update(data.data(), kFields);
        left.update(data.data(), 13);
        right.update(data.data() + 13 * kSize, kFields - 13);
        left.merge(right);
        EXPECT_EQ(left.count(), kFields);
        expect_close_state(left, all, 1e-12);
    }
}

TEST(Moments, MergeWithEmptyIsIdentity) {
    const auto data = make_fields(5, kSize, 5);
    ms::Moments full(kSize), empty(kSize), reference(kSize);
    full.update(data.data(), 5);
    reference.update(data.data(), 5);
    full.merge(empty);
    expect_same_state(full, reference);
    empty.merge(reference);
    expect_same_state(empty, reference);
}

TEST(Moments, FloatInputEqualsDoubleInput) {
    std::vector<float> single(kFields * kSize);
    const auto data = make_fields(kFields, kSize, 6);
    for (std::size_t i = 0; i < data.size(); ++i)
        single[i] = static_cast<float>(data[i]);
    const std::vector<double> widened(single.begin(), single.end());
    ms::Moments a(kSize), b(kSize);
    a.update(single.data(), kFields);
    b.update(widened.data(), kFields);
    expect_same_state(a, b);
}

TEST(Moments, ThreadsGiveIdenticalResults) {
    constexpr std::size_t size = 200000; // large enough to be split over threads
    const auto data = make_fields(3, size, 7);
    const int before = ms::get_num_threads();
    ms::Moments one(size), two(size);
    ms::set_num_threads(1);
    one.update(data.data(), 3);
    ms::set_num_threads(2);
    two.update(data.data(), 3);
    ms::set_num_threads(before);
    expect_same_state(one, two);
}

TEST(Moments, EmptyStatisticsAreNaN) {
    ms::Moments m(3);
    for (auto stat : {&ms::Moments::mean, &ms::Moments::skewness, &ms::Moments::kurtosis})
        for (double v : result(3, stat, m))
            EXPECT_TRUE(std::isnan(v));
}

TEST(Moments, RejectsBadArguments) {
    EXPECT_THROW(ms::Moments(10, 0), std::invalid_argument);
    EXPECT_THROW(ms::Moments(10, 5), std::invalid_argument);
    ms::Moments order1(10, 1), other(11), order4(10);
    std::vector<double> out(10);
    EXPECT_THROW(order1.variance(out.data(), 1), std::invalid_argument);
    EXPECT_THROW(order4.variance(out.data(), -1), std::invalid_argument);
    EXPECT_THROW(order4.merge(other), std::invalid_argument);
    EXPECT_THROW(order4.merge(order1), std::invalid_argument);
}

TEST(Extrema, MatchesReferenceMergesAndPropagatesNaN) {
    auto data = make_fields(kFields, kSize, 8);
    data[5 * kSize + 3] = std::nan("");
    ms::Extrema all(kSize), left(kSize), right(kSize);
    all.update(data.data(), kFields);
    left.update(data.data(), 9);
    right.update(data.data() + 9 * kSize, kFields - 9);
    left.merge(right);
    expect_same_state(left, all);
    std::vector<double> lo(kSize), hi(kSize);
    all.min(lo.data());
    all.max(hi.data());
    for (std::size_t i = 0; i < kSize; ++i) {
        double expected_lo = INFINITY, expected_hi = -INFINITY;
        for (std::size_t f = 0; f < kFields; ++f) {
            expected_lo = std::min(expected_lo, data[f * kSize + i]);
            expected_hi = std::max(expected_hi, data[f * kSize + i]);
        }
        if (i == 3) {
            EXPECT_TRUE(std::isnan(lo[i]) && std::isnan(hi[i]));
        } else {
            EXPECT_EQ(lo[i], expected_lo);
            EXPECT_EQ(hi[i], expected_hi);
        }
    }
}

TEST(ThresholdExceedance, CountsStrictlyGreaterAndMerges) {
    const std::vector<double> thresholds{-1.0, 0.0, 50.0};
    auto data = make_fields(kFields, kSize, 9);
    data[0] = 0.0;          // equal to a threshold: not an exceedance
    data[1] = std::nan(""); // never an exceedance
    ms::ThresholdExceedance all(kSize, thresholds), left(kSize, thresholds),
        right(kSize, thresholds);
    all.update(data.data(), kFields);
    left.update(data.data(), 20);
    right.update(data.data() + 20 * kSize, kFields - 20);
    left.merge(right);
    expect_same_state(left, all);
    for (std::size_t t = 0; t < thresholds.size(); ++t)
        for (std::size_t i = 0; i < kSize; ++i) {
            std::uint64_t expected = 0;
            for (std::size_t f = 0; f < kFields; ++f)
                expected += data[f * kSize + i] > thresholds[t];
            EXPECT_EQ(all.counts()[t * kSize + i], expected);
        }
    ms::ThresholdExceedance other(kSize, {1.0});
    EXPECT_THROW(all.merge(other), std::invalid_argument);
}

TEST(Quantiles, ConvergesToTheDistributionsQuantiles) {
    // 2000 values of a standard normal in every cell: the estimate of p must sit near the exact
    // empirical quantile, measured as the fraction of values below it.
    constexpr std::size_t size = 200, n = 2000;
    const std::vector<double> probabilities{0.1, 0.5, 0.9};
    std::mt19937_64 rng(10);
    std::normal_distribution<double> normal;
    std::vector<double> data(n * size);
    for (double &v : data)
        v = normal(rng);
    ms::Quantiles q(size, probabilities);
    q.update(data.data(), n);
    for (std::size_t p = 0; p < probabilities.size(); ++p) {
        double mean_rank_error = 0;
        for (std::size_t i = 0; i < size; ++i) {
            std::size_t below = 0;
            for (std::size_t f = 0; f < n; ++f)
                below += data[f * size + i] <= q.quantiles()[p * size + i];
            mean_rank_error += std::abs(static_cast<double>(below) / n - probabilities[p]);
        }
        EXPECT_LT(mean_rank_error / size, 0.01) << "p = " << probabilities[p];
    }
    EXPECT_THROW(ms::Quantiles(3, {0.0}), std::invalid_argument);
    EXPECT_THROW(ms::Quantiles(3, {1.0}), std::invalid_argument);
}

TEST(Covariance, MatchesReferenceAndMerges) {
    const auto x = make_fields(kFields, kSize, 11);
    auto y = make_fields(kFields, kSize, 12);
    for (std::size_t k = 0; k < y.size(); ++k)
        y[k] += 0.5 * x[k];
    ms::Covariance all(kSize), left(kSize), right(kSize);
    all.update(x.data(), y.data(), kFields);
    left.update(x.data(), y.data(), 17);
    right.update(x.data() + 17 * kSize, y.data() + 17 * kSize, kFields - 17);
    left.merge(right);
    expect_close_state(left, all, 1e-12);
    const TwoPass rx = two_pass(x, kFields, kSize), ry = two_pass(y, kFields, kSize);
    std::vector<double> covariance(kSize), correlation(kSize), got_cov(kSize), got_corr(kSize);
    for (std::size_t i = 0; i < kSize; ++i) {
        double c = 0;
        for (std::size_t f = 0; f < kFields; ++f)
            c += (x[f * kSize + i] - rx.mean[i]) * (y[f * kSize + i] - ry.mean[i]);
        covariance[i] = c / (kFields - 1);
        correlation[i] = c / std::sqrt(rx.m2[i] * ry.m2[i]);
    }
    all.covariance(got_cov.data(), 1);
    all.correlation(got_corr.data());
    expect_near_relative(got_cov, covariance, 1e-11);
    expect_near_relative(got_corr, correlation, 1e-11);
}

TEST(Sobol, LinearModelHasKnownIndices) {
    // y = sum_k c_k x_k with independent standard normal x_k: S_k = ST_k = c_k^2 / sum c^2.
    constexpr std::size_t n_params = 3, size = 2, groups = 20000;
    const double coefficients[size][n_params] = {{1.0, 2.0, 3.0}, {0.0, 1.0, 1.0}};
    std::mt19937_64 rng(13);
    std::normal_distribution<double> normal;
    std::vector<double> data(groups * (n_params + 2) * size);
    for (std::size_t g = 0; g < groups; ++g) {
        double a[n_params], b[n_params];
        for (std::size_t k = 0; k < n_params; ++k) {
            a[k] = normal(rng);
            b[k] = normal(rng);
        }
        double *group = data.data() + g * (n_params + 2) * size;
        for (std::size_t i = 0; i < size; ++i) {
            auto model = [&](const double *x) {
                double y = 0;
                for (std::size_t k = 0; k < n_params; ++k)
                    y += coefficients[i][k] * x[k];
                return y;
            };
            group[i] = model(a);
            group[size + i] = model(b);
            for (std::size_t k = 0; k < n_params; ++k) {
                double c[n_params];
                std::copy(a, a + n_params, c);
                c[k] = b[k];
                group[(k + 2) * size + i] = model(c);
            }
        }
    }
    ms::Sobol sobol(size, n_params);
    sobol.update(data.data(), groups);
    std::vector<double> first(n_params * size), total(n_params * size);
    sobol.first_order(first.data());
    sobol.total_order(total.data());
    for (std::size_t i = 0; i < size; ++i) {
        double sum = 0;
        for (double c : coefficients[i])
            sum += c * c;
        for (std::size_t k = 0; k < n_params; ++k) {
            const double expected = coefficients[i][k] * coefficients[i][k] / sum;
            EXPECT_NEAR(first[k * size + i], expected, 0.03) << "cell " << i << " param " << k;
            EXPECT_NEAR(total[k * size + i], expected, 0.03) << "cell " << i << " param " << k;
        }
    }
}

TEST(Sobol, BatchMergeAndThreadsAgree) {
    constexpr std::size_t n_params = 4, size = 70000, groups = 6;
    const auto data = make_fields(groups * (n_params + 2), size, 14);
    const int before = ms::get_num_threads();
    ms::set_num_threads(1);
    ms::Sobol one_by_one(size, n_params), left(size, n_params), right(size, n_params);
    for (std::size_t g = 0; g < groups; ++g)
        one_by_one.update(data.data() + g * (n_params + 2) * size, 1);
    left.update(data.data(), 2);
    right.update(data.data() + 2 * (n_params + 2) * size, groups - 2);
    ms::set_num_threads(2);
    ms::Sobol batch(size, n_params);
    batch.update(data.data(), groups);
    ms::set_num_threads(before);
    expect_same_state(one_by_one, batch);
    left.merge(right);
    expect_close_state(left, batch, 1e-12);
    EXPECT_THROW(ms::Sobol(size, 0), std::invalid_argument);
    ms::Sobol other(size, n_params + 1);
    EXPECT_THROW(batch.merge(other), std::invalid_argument);
}

/// The Sobol state array `name`, whose shape says how many values it holds.
std::vector<double> sobol_array(ms::Sobol &sobol, const std::string &name) {
    for (const auto &a : sobol.state())
        if (a.name == name) {
            std::size_t n = 1;
            for (std::size_t d : a.shape)
                n *= d;
            const double *data = static_cast<const double *>(a.data);
            return {data, data + n};
        }
    ADD_FAILURE() << "no state array " << name;
    return {};
}

TEST(Sobol, CentralSumsMatchTwoPassReference) {
    // Far from normal and far from 0: the sums are central, so the offset costs no digits.
    constexpr std::size_t n_params = 2, size = 50, groups = 200, rows = n_params + 2;
    const auto data = make_fields(groups * rows, size, 16, 1e3);
    ms::Sobol sobol(size, n_params);
    sobol.update(data.data(), groups);
    auto value = [&](std::size_t g, std::size_t row, std::size_t i) {
        return data[(g * rows + row) * size + i];
    };
    auto mean = [&](std::size_t row, std::size_t i) {
        double sum = 0;
        for (std::size_t g = 0; g < groups; ++g)
            sum += value(g, row, i);
        return sum / groups;
    };
    // sum over groups of (x - mean_x)^i (y - mean_y)^j, for rows x and y of cell `cell`
    auto central = [&](std::size_t x, std::size_t y, int i, int j, std::size_t cell) {
        const double mx = mean(x, cell), my = mean(y, cell);
        double sum = 0;
        for (std::size_t g = 0; g < groups; ++g)
            sum += std::pow(value(g, x, cell) - mx, i) * std::pow(value(g, y, cell) - my, j);
        return sum;
    };
    const struct {
        const char *name;
        int i, j;
    } mixed[] = {{"comoment", 1, 1}, {"m21", 2, 1}, {"m12", 1, 2},
                 {"m22", 2, 2},      {"m31", 3, 1}, {"m13", 1, 3}};
    for (const auto &[name, i, j] : mixed)
        for (const auto &[x, pair] : {std::pair<std::size_t, const char *>{1, "_bc"}, {0, "_ac"}}) {
            const auto got = sobol_array(sobol, name + std::string(pair));
            std::vector<double> expected(n_params * size);
            for (std::size_t k = 0; k < n_params; ++k)
                for (std::size_t cell = 0; cell < size; ++cell)
                    expected[k * size + cell] = central(x, k + 2, i, j, cell);
            expect_near_relative(got, expected, 1e-9);
        }
    for (int p = 2; p <= 4; ++p) {
        const std::string order = "m" + std::to_string(p);
        for (const auto &[row, suffix] :
             {std::pair<std::size_t, const char *>{0, "_a"}, {1, "_b"}}) {
            std::vector<double> expected(size);
            for (std::size_t cell = 0; cell < size; ++cell)
                expected[cell] = central(row, row, p, 0, cell);
            expect_near_relative(sobol_array(sobol, order + suffix), expected, 1e-9);
        }
        std::vector<double> expected(n_params * size);
        for (std::size_t k = 0; k < n_params; ++k)
            for (std::size_t cell = 0; cell < size; ++cell)
                expected[k * size + cell] = central(k + 2, k + 2, p, 0, cell);
        expect_near_relative(sobol_array(sobol, order + "_c"), expected, 1e-9);
    }
}

/// Copies every state array of `from` into `to`, as a checkpoint's reader does.
template <class Acc> void copy_state(Acc &from, Acc &to) {
    auto source = from.state(), target = to.state();
    ASSERT_EQ(source.size(), target.size());
    for (std::size_t k = 0; k < source.size(); ++k) {
        std::size_t n = 1;
        for (std::size_t d : source[k].shape)
            n *= d;
        std::memcpy(target[k].data, source[k].data, n * source[k].value_bytes());
    }
}

TEST(State, WritingTheStateRestoresAnAccumulator) {
    const auto data = make_fields(kFields, kSize, 15);
    ms::Moments original(kSize), restored(kSize);
    original.update(data.data(), 10);
    copy_state(original, restored);
    original.update(data.data() + 10 * kSize, kFields - 10);
    restored.update(data.data() + 10 * kSize, kFields - 10);
    expect_same_state(original, restored);
    EXPECT_EQ(restored.count(), kFields);
}

TEST(State, WritingTheStateRestoresASobolAccumulator) {
    constexpr std::size_t n_params = 3, size = 100, groups = 12;
    const auto data = make_fields(groups * (n_params + 2), size, 17);
    ms::Sobol original(size, n_params), restored(size, n_params);
    original.update(data.data(), 5);
    copy_state(original, restored);
    const double *rest = data.data() + 5 * (n_params + 2) * size;
    original.update(rest, groups - 5);
    restored.update(rest, groups - 5);
    expect_same_state(original, restored);
    EXPECT_EQ(restored.count(), groups);
}

TEST(Threads, RejectsFewerThanOne) {
    EXPECT_THROW(ms::set_num_threads(0), std::invalid_argument);
    EXPECT_GE(ms::get_num_threads(), 1);
}
