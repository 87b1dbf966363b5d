// SPDX-License-Identifier: BSD-3-Clause
//
// Every sum is a central sum about the running mean, combined by Pebay's formula (Pebay 2008;
// Pebay, Terriberry, Kolla and Bennett 2016 for the mixed sums): each part's sums are moved to the
// mean of the whole, then added. A new group is a part of one value, whose central sums are 0:
// the update is that formula written out, which halves its operations.
#include <cmath>
#include <string>
#include <utility>

#include "melissa/stats.hpp"
#include "tiling.hpp"

namespace melissa::stats {
namespace {

/// Moves the central sums m_p = sum of d^p of n values to a point u away from their mean (each d
/// becoming d + u): sum (d + u)^p = sum_i C(p, i) m_i u^(p - i), with m_0 = n and m_1 = 0.
inline void shift(double n, double u, double &m2, double &m3, double &m4) {
    const double u2 = u * u;
    m4 += 4.0 * u * m3 + 6.0 * u2 * m2 + n * u2 * u2;
    m3 += 3.0 * u * m2 + n * u2 * u;
    m2 += n * u2;
}

/// Mixed central sums m_ij = sum of dx^i dy^j of a pair.
struct Mixed {
    double m11, m21, m12, m22, m31, m13;
};

/// The same for the mixed sums of n pairs moved by (u, v), sum (dx + u)^i (dy + v)^j, which also
/// takes the sums of x alone (m20, m30) and of y alone (m02, m03) before the move.
inline void shift(double n, double u, double v, double m20, double m30, double m02, double m03,
                  Mixed &s) {
    const double uv = u * v;
    s.m22 += 2.0 * v * s.m21 + v * v * m20 + 2.0 * u * s.m12 + 4.0 * uv * s.m11 + u * u * m02 +
             n * uv * uv;
    s.m31 += v * m30 + 3.0 * u * s.m21 + 3.0 * uv * m20 + 3.0 * u * u * s.m11 + n * uv * u * u;
    s.m13 += u * m03 + 3.0 * v * s.m12 + 3.0 * uv * m02 + 3.0 * v * v * s.m11 + n * uv * v * v;
    s.m21 += v * m20 + 2.0 * u * s.m11 + n * uv * u;
    s.m12 += u * m02 + 2.0 * v * s.m11 + n * uv * v;
    s.m11 += n * uv;
}

/// One value joining `before` others, n = before + 1 in all. With dx = (x - mean) / n the move of
/// the mean, the old sums move by -dx and the value adds (before dx)^p, which with the old ones'
/// before (-dx)^p make k_p dx^p; mixed sums of order i + j likewise add k_(i+j) dx^i dy^j.
struct Step {
    double inv, k2, k3, k4;
    explicit Step(double before) {
        const double n = before + 1.0;
        inv = 1.0 / n;
        k2 = before * n;
        k3 = k2 * (n - 2.0);
        k4 = k2 * (n * n - 3.0 * n + 3.0);
    }
};

template <class T>
MELISSA_KERNEL void variable_step(double *__restrict mean, double *__restrict m2,
                                  double *__restrict m3, double *__restrict m4,
                                  const T *__restrict x, std::size_t n, Step s) {
    for (std::size_t i = 0; i < n; ++i) {
        const double dx = (static_cast<double>(x[i]) - mean[i]) * s.inv, dx2 = dx * dx;
        mean[i] += dx;
        m4[i] += dx * (6.0 * dx * m2[i] - 4.0 * m3[i]) + s.k4 * dx2 * dx2;
        m3[i] += -3.0 * dx * m2[i] + s.k3 * dx2 * dx;
        m2[i] += s.k2 * dx2;
    }
}

// The mixed sums of (x, y) after the pair (x, y) joins them; the sums of x and y alone are still
// those before it.
template <class T>
MELISSA_KERNEL void
pair_step(double *__restrict m11, double *__restrict m21, double *__restrict m12,
          double *__restrict m22, double *__restrict m31, double *__restrict m13,
          const T *__restrict x, const double *__restrict mean_x, const double *__restrict m2_x,
          const double *__restrict m3_x, const T *__restrict y, const double *__restrict mean_y,
          const double *__restrict m2_y, const double *__restrict m3_y, std::size_t n, Step s) {
    for (std::size_t i = 0; i < n; ++i) {
        const double dx = (static_cast<double>(x[i]) - mean_x[i]) * s.inv;
        const double dy = (static_cast<double>(y[i]) - mean_y[i]) * s.inv;
        const double dxy = dx * dy, dx2 = dx * dx, dy2 = dy * dy, k4 = s.k4 * dxy;
        const double a11 = m11[i], a21 = m21[i], a12 = m12[i], m20 = m2_x[i], m02 = m2_y[i];
        m22[i] += dy2 * m20 + dx2 * m02 + 4.0 * dxy * a11 - 2.0 * (dy * a21 + dx * a12) + k4 * dxy;
        m31[i] += 3.0 * (dxy * m20 + dx2 * a11 - dx * a21) - dy * m3_x[i] + k4 * dx2;
        m13[i] += 3.0 * (dxy * m02 + dy2 * a11 - dy * a12) - dx * m3_y[i] + k4 * dy2;
        m21[i] = a21 - dy * m20 - 2.0 * dx * a11 + s.k3 * dxy * dx;
        m12[i] = a12 - dx * m02 - 2.0 * dy * a11 + s.k3 * dxy * dy;
        m11[i] = a11 + s.k2 * dxy;
    }
}

} // namespace

Sobol::Sobol(std::size_t size, std::size_t n_params) : size_(size), n_params_(n_params) {
    detail::require(n_params >= 1, "Sobol: n_params must be at least 1");
    for (Variable *v : {&a_, &b_, &c_}) {
        const std::size_t n = v == &c_ ? n_params * size : size;
        for (std::vector<double> *sums : {&v->mean, &v->m2, &v->m3, &v->m4})
            sums->assign(n, 0.0);
    }
    for (Pair *p : {&bc_, &ac_})
        for (std::vector<double> *sums : {&p->m11, &p->m21, &p->m12, &p->m22, &p->m31, &p->m13})
            sums->assign(n_params * size, 0.0);
}

template <class T> void Sobol::update_impl(const T *groups, std::size_t n_groups) {
    const std::size_t size = size_, n_params = n_params_, fields_per_group = n_params + 2;
    const std::uint64_t count = count_;
    detail::for_each_tile(
        size, size * n_groups * fields_per_group, [&](std::size_t begin, std::size_t end) {
            for (std::size_t g = 0; g < n_groups; ++g) {
                const T *group = groups + g * fields_per_group * size;
                const Step step(static_cast<double>(count + g));
                // Chunks keep the sums of y_A and y_B in L1 while every y_Ck reads them.
                detail::for_each_chunk(begin, end, [&](std::size_t first, std::size_t last) {
                    const std::size_t n = last - first;
                    auto pair = [&](Pair &p, const Variable &x, const T *x_values, std::size_t at,
                                    const T *c_values) {
                        pair_step(p.m11.data() + at, p.m21.data() + at, p.m12.data() + at,
                                  p.m22.data() + at, p.m31.data() + at, p.m13.data() + at, x_values,
                                  x.mean.data() + first, x.m2.data() + first, x.m3.data() + first,
                                  c_values, c_.mean.data() + at, c_.m2.data() + at,
                                  c_.m3.data() + at, n, step);
                    };
                    auto variable = [&](Variable &v, std::size_t at, const T *values) {
                        variable_step(v.mean.data() + at, v.m2.data() + at, v.m3.data() + at,
                                      v.m4.data() + at, values, n, step);
                    };
                    // The pairs need the sums of their variables before this group: those last.
                    for (std::size_t k = 0; k < n_params; ++k) {
                        const std::size_t at = k * size + first;
                        const T *c = group + (k + 2) * size + first;
                        pair(bc_, b_, group + size + first, at, c);
                        pair(ac_, a_, group + first, at, c);
                        variable(c_, at, c);
                    }
                    variable(a_, first, group + first);
                    variable(b_, first, group + size + first);
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
    // With delta the other's mean minus this one's, the mean of the whole is this one's plus
    // delta * other_share: this part's deviations move by -delta * other_share, the other's by
    // delta * mine_share.
    const double mine = static_cast<double>(count_), theirs = static_cast<double>(other.count_);
    const double other_share = theirs / (mine + theirs), mine_share = 1.0 - other_share;
    auto merge_variable = [&](Variable &v, const Variable &o, std::size_t at) {
        const double delta = o.mean[at] - v.mean[at];
        double s2 = v.m2[at], s3 = v.m3[at], s4 = v.m4[at];
        double o2 = o.m2[at], o3 = o.m3[at], o4 = o.m4[at];
        shift(mine, -delta * other_share, s2, s3, s4);
        shift(theirs, delta * mine_share, o2, o3, o4);
        v.mean[at] += delta * other_share;
        v.m2[at] = s2 + o2;
        v.m3[at] = s3 + o3;
        v.m4[at] = s4 + o4;
    };
    auto merge_pair = [&](Pair &p, const Pair &o, const Variable &x, const Variable &ox,
                          std::size_t x_at, std::size_t at) {
        const double dx = ox.mean[x_at] - x.mean[x_at], dy = other.c_.mean[at] - c_.mean[at];
        Mixed s{p.m11[at], p.m21[at], p.m12[at], p.m22[at], p.m31[at], p.m13[at]};
        Mixed t{o.m11[at], o.m21[at], o.m12[at], o.m22[at], o.m31[at], o.m13[at]};
        shift(mine, -dx * other_share, -dy * other_share, x.m2[x_at], x.m3[x_at], c_.m2[at],
              c_.m3[at], s);
        shift(theirs, dx * mine_share, dy * mine_share, ox.m2[x_at], ox.m3[x_at], other.c_.m2[at],
              other.c_.m3[at], t);
        p.m11[at] = s.m11 + t.m11;
        p.m21[at] = s.m21 + t.m21;
        p.m12[at] = s.m12 + t.m12;
        p.m22[at] = s.m22 + t.m22;
        p.m31[at] = s.m31 + t.m31;
        p.m13[at] = s.m13 + t.m13;
    };
    const std::size_t size = size_, n_params = n_params_;
    detail::for_each_tile(size, size * (n_params + 2), [&](std::size_t begin, std::size_t end) {
        // As in update, the pairs first, while their variables still hold their own sums.
        for (std::size_t k = 0; k < n_params; ++k)
            for (std::size_t i = begin; i < end; ++i) {
                const std::size_t at = k * size + i;
                merge_pair(bc_, other.bc_, b_, other.b_, i, at);
                merge_pair(ac_, other.ac_, a_, other.a_, i, at);
                merge_variable(c_, other.c_, at);
            }
        for (std::size_t i = begin; i < end; ++i) {
            merge_variable(a_, other.a_, i);
            merge_variable(b_, other.b_, i);
        }
    });
    count_ += other.count_;
}

void Sobol::first_order(double *out) const {
    for (std::size_t k = 0; k < n_params_; ++k)
        for (std::size_t i = 0; i < size_; ++i) {
            const std::size_t at = k * size_ + i;
            out[at] = bc_.m11[at] / std::sqrt(b_.m2[i] * c_.m2[at]);
        }
}

void Sobol::total_order(double *out) const {
    for (std::size_t k = 0; k < n_params_; ++k)
        for (std::size_t i = 0; i < size_; ++i) {
            const std::size_t at = k * size_ + i;
            out[at] = 1.0 - ac_.m11[at] / std::sqrt(a_.m2[i] * c_.m2[at]);
        }
}

std::vector<StateArray> Sobol::state() {
    std::vector<StateArray> arrays{{"count", &count_, StateArray::Type::UInt64, {}}};
    auto add = [&](std::string name, std::vector<double> &sums, bool per_param) {
        std::vector<std::size_t> shape{size_};
        if (per_param)
            shape.insert(shape.begin(), n_params_);
        arrays.push_back({std::move(name), sums.data(), StateArray::Type::Float64, shape});
    };
    add("mean_a", a_.mean, false);
    add("mean_b", b_.mean, false);
    add("m2_a", a_.m2, false);
    add("m2_b", b_.m2, false);
    add("m3_a", a_.m3, false);
    add("m3_b", b_.m3, false);
    add("m4_a", a_.m4, false);
    add("m4_b", b_.m4, false);
    add("mean_c", c_.mean, true);
    add("m2_c", c_.m2, true);
    add("m3_c", c_.m3, true);
    add("m4_c", c_.m4, true);
    add("comoment_bc", bc_.m11, true);
    add("comoment_ac", ac_.m11, true);
    for (auto &[pair, suffix] : {std::pair<Pair *, std::string>{&bc_, "_bc"}, {&ac_, "_ac"}}) {
        add("m21" + suffix, pair->m21, true);
        add("m12" + suffix, pair->m12, true);
        add("m22" + suffix, pair->m22, true);
        add("m31" + suffix, pair->m31, true);
        add("m13" + suffix, pair->m13, true);
    }
    return arrays;
}

} // namespace melissa::stats
