# SPDX-License-Identifier: BSD-3-Clause
"""Coverage of Sobol.confidence_intervals: how often a 95% interval holds the analytic index, on
outputs far from normal (the Ishigami function and a Sobol g-function).

Replicates are the cells of one accumulator, each cell drawing its own inputs, so that thousands
of independent studies cost one update per group. Run as a script, it prints the coverage table
of bench/RESULTS.md:

    python tests/python/test_sobol_coverage.py
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
import pytest
from stats_helpers import Array
from test_stats import (
    g_function,
    g_function_indices,
    ishigami,
    ishigami_indices,
    pick_freeze_groups,
)

from melissa import stats

LEVEL = 0.95
# At 95%, a coverage measured over 4000 replicates has a binomial standard deviation of 0.0034:
# the rule's worst index at 128 groups (0.939, measured over 20,000 replicates) is 2.6 of them
# above the bound, and every index at 1024 groups five or more.
REPLICATES = 4000
MIN_COVERAGE = 0.93
BATCH = 64  # groups per update: keeps the inputs of one update near 100 MB for the g-function


@dataclass(frozen=True)
class Problem:
    name: str
    function: Callable[[Array, Array], Array]  # (inputs (..., cells, d), coefficients) -> output
    coefficients: Array  # of one replicate: every cell computes the same function
    indices: tuple[Array, Array]  # analytic (first, total), each (d,)
    low: float
    high: float

    @property
    def n_params(self) -> int:
        return len(self.indices[0])


def _problem(name: str, function: Callable[[Array, Array], Array], coefficients: Array,
             indices: Callable[[Array], tuple[Array, Array]], low: float, high: float) -> Problem:
    first, total = indices(coefficients[None])
    return Problem(name, function, coefficients, (first[:, 0], total[:, 0]), low, high)


PROBLEMS = [
    _problem("ishigami", ishigami, np.array(7.0), ishigami_indices, -np.pi, np.pi),
    _problem("g_function", g_function, np.array([0.0, 1.0, 4.5, 9.0, 99.0]), g_function_indices,
             0.0, 1.0),
]  # fmt: skip


def pick_freeze_batches(
    problem: Problem, cells: int, n_groups: int, rng: np.random.Generator
) -> Iterator[Array]:
    """Batches (k, n_params + 2, cells) of groups y_A, y_B, y_C1 ... y_Cp, each cell with its own
    inputs."""
    coefficients = np.broadcast_to(problem.coefficients, (cells, *problem.coefficients.shape))
    for start in range(0, n_groups, BATCH):
        yield pick_freeze_groups(problem, coefficients, min(BATCH, n_groups - start), rng)


@dataclass(frozen=True)
class Coverage:
    """Per index, the fraction of replicates whose interval holds the analytic value, (d,)."""

    first: Array
    total: Array
    fisher_first: Array  # the same by Fisher's z with 1 / sqrt(n - 3), the rule before
    fisher_total: Array
    width_ratio: Array  # mean interval width over 2 q times the spread of the estimates, (2, d)


def measure(problem: Problem, n_groups: int, replicates: int, seed: int) -> Coverage:
    rng = np.random.default_rng(seed)
    sobol = stats.Sobol(replicates, problem.n_params)
    for batch in pick_freeze_batches(problem, replicates, n_groups, rng):
        sobol.update(batch)
    first, total = (index[:, None] for index in problem.indices)
    bounds = sobol.confidence_intervals(LEVEL)

    q = NormalDist().inv_cdf(0.5 + LEVEL / 2)
    half_width = q / math.sqrt(n_groups - 3)
    z_first, z_total = np.arctanh(sobol.first_order()), np.arctanh(1.0 - sobol.total_order())
    fisher_first = np.tanh(z_first - half_width), np.tanh(z_first + half_width)
    fisher_total = 1.0 - np.tanh(z_total + half_width), 1.0 - np.tanh(z_total - half_width)

    widths = np.stack([bounds.first_upper - bounds.first_lower,
                       bounds.total_upper - bounds.total_lower])  # fmt: skip
    spreads = np.stack([sobol.first_order().std(axis=1), sobol.total_order().std(axis=1)])
    return Coverage(
        first=_covered(bounds.first_lower, bounds.first_upper, first),
        total=_covered(bounds.total_lower, bounds.total_upper, total),
        fisher_first=_covered(*fisher_first, first),
        fisher_total=_covered(*fisher_total, total),
        width_ratio=widths.mean(axis=2) / (2.0 * q * spreads),
    )


def _covered(lower: Array, upper: Array, index: Array) -> Array:
    return np.mean((lower <= index) & (index <= upper), axis=1)


@pytest.mark.parametrize("n_groups", [128, 1024])
@pytest.mark.parametrize("problem", PROBLEMS, ids=[p.name for p in PROBLEMS])
def test_intervals_hold_their_level(problem: Problem, n_groups: int) -> None:
    coverage = measure(problem, n_groups, REPLICATES, seed=n_groups)
    assert np.all(coverage.first >= MIN_COVERAGE), coverage.first
    assert np.all(coverage.total >= MIN_COVERAGE), coverage.total
    # Not by being wide: about as wide as the spread of the estimates asks for.
    assert np.all((coverage.width_ratio > 0.9) & (coverage.width_ratio < 1.2)), coverage.width_ratio
    if problem.name == "ishigami":
        # The rule this one replaced, which assumed normal outputs, fails here: the test can fail.
        assert coverage.fisher_total[0] < 0.9


def coverage_table(problem: Problem, sizes: tuple[int, ...] = (32, 128, 1024)) -> str:
    """Markdown: one row per number of groups and rule, one column per index."""
    names = [f"S{k}" for k in range(1, problem.n_params + 1)]
    names += [f"T{k}" for k in range(1, problem.n_params + 1)]
    lines = [f"| {problem.name}: rule | groups | " + " | ".join(names) + " |",
             "|---" * (len(names) + 2) + "|"]  # fmt: skip
    for n_groups in sizes:
        c = measure(problem, n_groups, REPLICATES, seed=n_groups)
        rules = {"delta-method score": (c.first, c.total),
                 "Fisher z, 1/(n - 3)": (c.fisher_first, c.fisher_total)}  # fmt: skip
        for rule, values in rules.items():
            row = " | ".join(f"{v:.3f}" for v in np.concatenate(values))
            lines.append(f"| {rule} | {n_groups} | {row} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(f"Coverage of {LEVEL:.0%} intervals over {REPLICATES} replicates\n")
    for problem in PROBLEMS:
        print(coverage_table(problem) + "\n")
