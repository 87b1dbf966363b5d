# SPDX-License-Identifier: BSD-3-Clause
"""Accuracy of melissa's Robbins-Monro quantiles against the exact empirical quantiles.

For each law and ensemble size n, every one of CELLS cells receives n independent values; the
error of an estimate q of probability p is its rank error |F_n(q) - p|, F_n being the cell's
empirical distribution function (0 means q is an exact empirical p-quantile), averaged over
cells. For scale, the sampling error of the exact empirical quantile itself around the law's true
quantile is about sqrt(p (1 - p) / n) in the same units.

    python bench/quantile_accuracy.py [--cells 2000] [--seed 0]
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import numpy as np

from melissa.stats import Quantiles

PROBABILITIES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
SIZES = (100, 1000, 10000)


def laws(rng: np.random.Generator) -> dict[str, Callable[[tuple[int, int]], np.ndarray]]:
    return {
        "normal": lambda shape: rng.normal(size=shape),
        "uniform": lambda shape: rng.uniform(size=shape),
        "exponential": lambda shape: rng.exponential(size=shape),
        "lognormal": lambda shape: rng.lognormal(size=shape),
    }


def rank_errors(values: np.ndarray, estimates: np.ndarray) -> np.ndarray:
    """Mean over cells of |F_n(q) - p| for each probability; values (n, cells)."""
    below = (values[None, :, :] <= estimates[:, None, :]).mean(axis=1)
    return np.abs(below - np.array(PROBABILITIES)[:, None]).mean(axis=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    columns = " | ".join(f"p={p}" for p in PROBABILITIES)
    print(f"| law | n | {columns} | sampling error p=0.5 |")
    print("|---|---|" + "---|" * (len(PROBABILITIES) + 1))
    for name, draw in laws(rng).items():
        for n in SIZES:
            values = draw((n, args.cells))
            quantiles = Quantiles(args.cells, list(PROBABILITIES))
            quantiles.update(values)
            errors = rank_errors(values, quantiles.quantiles())
            cells = " | ".join(f"{e:.4f}" for e in errors)
            print(f"| {name} | {n} | {cells} | {np.sqrt(0.25 / n):.4f} |")


if __name__ == "__main__":
    main()
