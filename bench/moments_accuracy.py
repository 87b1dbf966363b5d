# SPDX-License-Identifier: BSD-3-Clause
"""Accuracy of melissa's streaming statistics on data far from zero, against two-pass ones.

Each of CELLS cells receives N values offset + g, g from a gamma law of unit spread (shape 4:
skewness 1, excess kurtosis 1.5), for offsets 0, 1e6 and 1e9. The reference is a two-pass
computation in long double on the values minus the cell's first value (a subtraction exact in
long double), so that its own error, some 1e-19, is far below what is measured. Each row gives
the largest relative error over cells of numpy/scipy's two-pass computation in float64 (np.mean,
np.var, scipy.stats.skew and kurtosis on the values themselves) and of melissa's accumulators.

Covariance and correlation: pairs (x, y) of correlation 0.6 at the same offset. Sobol: a linear
model offset + x1 + x2 / 2 of two standard normal parameters (first-order indices 0.8 and 0.2),
pick-freeze groups; the reference is the same Martinez estimator (correlations) in long double.

    python bench/moments_accuracy.py [--cells 64] [--n 4000] [--seed 0]
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np
import numpy.typing as npt
import scipy.stats

import melissa
from melissa import stats

Array = npt.NDArray[Any]
OFFSETS = (0.0, 1e6, 1e9)


def centered(x: Array) -> tuple[Array, Array]:
    """The cells' long double means and deviations from them, computed on the values minus each
    cell's first value: exact, and small whatever the offset."""
    first = x[0].astype(np.longdouble)
    shifted = x.astype(np.longdouble) - first
    mean = shifted.mean(axis=0)
    return first + mean, shifted - mean


def moments_reference(x: Array) -> dict[str, Array]:
    mean, d = centered(x)
    n = len(x)
    m2, m3, m4 = ((d**k).sum(axis=0) for k in (2, 3, 4))
    return {
        "mean": mean,
        "variance": m2 / (n - 1),
        "skewness": np.sqrt(np.longdouble(n)) * m3 / m2**1.5,
        "kurtosis": n * m4 / m2**2 - 3,
    }


def pair_reference(x: Array, y: Array) -> dict[str, Array]:
    (_, dx), (_, dy) = centered(x), centered(y)
    sxy = (dx * dy).sum(axis=0)
    return {
        "covariance": sxy / (len(x) - 1),
        "correlation": sxy / np.sqrt((dx * dx).sum(axis=0) * (dy * dy).sum(axis=0)),
    }


def relative_error(got: Array, reference: Array) -> float:
    error = np.abs(got.astype(np.longdouble) - reference) / np.abs(reference)
    return float(np.max(error))


def moments_rows(rng: np.random.Generator, offset: float, n: int, cells: int) -> list[str]:
    x = offset + rng.gamma(4.0, 0.5, (n, cells))
    reference = moments_reference(x)
    two_pass = {
        "mean": np.mean(x, axis=0),
        "variance": np.var(x, axis=0, ddof=1),
        "skewness": scipy.stats.skew(x, axis=0),
        "kurtosis": scipy.stats.kurtosis(x, axis=0),
    }
    moments = stats.Moments(cells)
    moments.update(x)
    ours = {name: getattr(moments, name)() for name in reference}
    # Order 1 keeps no shift.
    mean_only = stats.Moments(cells, order=1)
    mean_only.update(x)
    ours["mean, order 1"] = mean_only.mean()
    reference["mean, order 1"], two_pass["mean, order 1"] = reference["mean"], two_pass["mean"]
    return [
        f"| {offset:g} | {name} | {relative_error(two_pass[name], reference[name]):.1e} "
        f"| {relative_error(ours[name], reference[name]):.1e} |"
        for name in reference
    ]


def covariance_rows(rng: np.random.Generator, offset: float, n: int, cells: int) -> list[str]:
    u, v = rng.standard_normal((2, n, cells))
    x, y = offset + u, offset + 0.6 * u + 0.8 * v
    reference = pair_reference(x, y)
    two_pass = {
        "covariance": np.array([np.cov(x[:, i], y[:, i])[0, 1] for i in range(cells)]),
        "correlation": np.array([np.corrcoef(x[:, i], y[:, i])[0, 1] for i in range(cells)]),
    }
    covariance = stats.Covariance(cells)
    covariance.update(x, y)
    ours = {"covariance": covariance.covariance(), "correlation": covariance.correlation()}
    return [
        f"| {offset:g} | {name} | {relative_error(two_pass[name], reference[name]):.1e} "
        f"| {relative_error(ours[name], reference[name]):.1e} |"
        for name in reference
    ]


def sobol_rows(rng: np.random.Generator, offset: float, n: int, cells: int) -> list[str]:
    a, b = rng.standard_normal((2, n, 2, cells))
    weights = np.array([1.0, 0.5])[:, None]
    c = [np.where(np.arange(2)[:, None] == k, b, a) for k in range(2)]
    y_a, y_b, *y_c = (offset + (weights * p).sum(axis=1) for p in (a, b, *c))
    sobol = stats.Sobol(cells, 2)
    sobol.update(np.stack([y_a, y_b, *y_c], axis=1))
    first = [pair_reference(y_b, yc)["correlation"] for yc in y_c]
    total = [1 - pair_reference(y_a, yc)["correlation"] for yc in y_c]
    two_pass_first = [
        np.array([np.corrcoef(y_b[:, i], yc[:, i])[0, 1] for i in range(cells)]) for yc in y_c
    ]
    two_pass_total = [
        1 - np.array([np.corrcoef(y_a[:, i], yc[:, i])[0, 1] for i in range(cells)]) for yc in y_c
    ]
    rows = []
    for name, ours, two_pass, reference in (
        ("Sobol first order", sobol.first_order(), two_pass_first, first),
        ("Sobol total order", sobol.total_order(), two_pass_total, total),
    ):
        errors = [
            (relative_error(tp, ref), relative_error(our, ref))
            for our, tp, ref in zip(ours, two_pass, reference, strict=True)
        ]
        worst_two_pass, worst_ours = (max(e) for e in zip(*errors, strict=True))
        rows.append(f"| {offset:g} | {name} | {worst_two_pass:.1e} | {worst_ours:.1e} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=64)
    parser.add_argument("--n", type=int, default=4000, help="values per cell (default 4000)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(f"melissa from {melissa.__file__}, {args.n} values per cell, {args.cells} cells\n")
    print("| offset | statistic | two-pass float64 | melissa |")
    print("|---|---|---|---|")
    for rows in (moments_rows, covariance_rows, sobol_rows):
        for offset in OFFSETS:
            rng = np.random.default_rng(args.seed)
            for row in rows(rng, offset, args.n, args.cells):
                print(row)


if __name__ == "__main__":
    main()
