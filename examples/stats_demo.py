# SPDX-License-Identifier: BSD-3-Clause
"""melissa.stats on fields whose statistics are known exactly: `make demo`.

Part 1 streams fields whose three cells follow a normal, an exponential and a uniform law, and
compares the iterative moments and quantiles with the laws' exact values. Part 2 streams
pick-freeze groups of the Ishigami function, one (a, b) per cell, and compares the Sobol indices
and their 95% confidence intervals with the analytic indices.
"""

from __future__ import annotations

import math
import time

import numpy as np

from melissa.config import StudyOptions
from melissa.sampling import draw_parameters
from melissa.stats import Moments, Quantiles, Sobol

N_FIELDS = 200_000
N_GROUPS = 50_000
BATCH = 5_000


def moments_demo(rng: np.random.Generator) -> None:
    laws = {
        "normal(10, 2)": dict(mean=10.0, variance=4.0, skewness=0.0, kurtosis=0.0,
                              median=10.0, draw=lambda n: rng.normal(10.0, 2.0, n)),
        "exponential(1)": dict(mean=1.0, variance=1.0, skewness=2.0, kurtosis=6.0,
                               median=math.log(2.0), draw=lambda n: rng.exponential(1.0, n)),
        "uniform(0, 1)": dict(mean=0.5, variance=1 / 12, skewness=0.0, kurtosis=-1.2,
                              median=0.5, draw=lambda n: rng.uniform(0.0, 1.0, n)),
    }
    moments = Moments(len(laws))
    median = Quantiles(len(laws), [0.5])
    for _ in range(N_FIELDS // BATCH):
        fields = np.stack([law["draw"](BATCH) for law in laws.values()], axis=1)
        moments.update(fields)
        median.update(fields)

    estimates = {
        "mean": moments.mean(), "variance": moments.variance(), "skewness": moments.skewness(),
        "kurtosis": moments.kurtosis(), "median": median.quantiles()[0],
    }
    print(f"Moments and median of {moments.count:,} fields of 3 cells (excess kurtosis, "
          "sample variance):")
    print(f"  {'cell':16} {'statistic':10} {'melissa':>10} {'exact':>10}")
    for cell, (name, law) in enumerate(laws.items()):
        for statistic, values in estimates.items():
            print(f"  {name:16} {statistic:10} {values[cell]:10.4f} {law[statistic]:10.4f}")


def ishigami(x: np.ndarray, a: float, b: float) -> np.ndarray:
    return np.sin(x[..., 0]) + a * np.sin(x[..., 1]) ** 2 + b * x[..., 2] ** 4 * np.sin(x[..., 0])


def ishigami_indices(a: float, b: float) -> tuple[np.ndarray, np.ndarray]:
    """Analytic first and total Sobol indices of the Ishigami function."""
    v1 = 0.5 * (1 + b * math.pi**4 / 5) ** 2
    v2 = a**2 / 8
    v13 = 8 * b**2 * math.pi**8 / 225
    v = v1 + v2 + v13
    return np.array([v1, v2, 0.0]) / v, np.array([v1 + v13, v2, v13]) / v


def sobol_demo(rng: np.random.Generator) -> None:
    cells = [(7.0, 0.1), (5.0, 0.05), (2.0, 0.3)]
    n_params = 3
    sobol = Sobol(len(cells), n_params)
    # The launcher's own pick-freeze groups: A, B, then C_k = A with parameter k taken from B.
    study = StudyOptions(parameter_sweep_size=N_GROUPS, nb_parameters=n_params,
                         l_bounds=[-math.pi] * n_params, u_bounds=[math.pi] * n_params,
                         field_names=["y"], nb_time_steps=1, seed=int(rng.integers(2**31)))
    inputs = draw_parameters(study, sobol=True).reshape(N_GROUPS, n_params + 2, n_params)
    for batch in np.split(inputs, N_GROUPS // BATCH):
        sobol.update(np.stack([ishigami(batch, ca, cb) for ca, cb in cells], axis=-1))

    first, total = sobol.first_order(), sobol.total_order()
    intervals = sobol.confidence_intervals(0.95)
    print(f"\nSobol indices of the Ishigami function from {sobol.count:,} pick-freeze groups "
          f"({sobol.count * (n_params + 2):,} runs), 95% confidence intervals:")
    print(f"  {'a, b':10} {'index':6} {'melissa':>8} {'interval':>19} {'exact':>8}")
    for cell, (ca, cb) in enumerate(cells):
        exact_first, exact_total = ishigami_indices(ca, cb)
        for k in range(n_params):
            for label, estimate, lower, upper, exact in (
                (f"S{k + 1}", first, intervals.first_lower, intervals.first_upper, exact_first),
                (f"ST{k + 1}", total, intervals.total_lower, intervals.total_upper, exact_total),
            ):
                print(f"  {f'{ca:g}, {cb:g}':10} {label:6} {estimate[k, cell]:8.4f} "
                      f"[{lower[k, cell]:8.4f}, {upper[k, cell]:8.4f}] {exact[k]:8.4f}")


def main() -> None:
    rng = np.random.default_rng(2026)
    start = time.perf_counter()
    moments_demo(rng)
    sobol_demo(rng)
    print(f"\nDone in {time.perf_counter() - start:.1f} s.")


if __name__ == "__main__":
    main()
