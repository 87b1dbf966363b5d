# SPDX-License-Identifier: BSD-3-Clause
"""What the melissa.stats tests share: one description per accumulator kind, so that the
checkpoint, error, NaN, layout and thread tests run over all of them alike, and two-pass
references computed with numpy/scipy only (never with melissa)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import scipy.stats

from melissa import stats

Array = npt.NDArray[Any]
Accumulator = Any  # any melissa.stats accumulator; they share no Python base class worth naming


# ------------------------------------------------------------------------------------------------
# One description per accumulator kind
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """An accumulator kind with a fixed configuration.

    An *observation* is what one call to update() takes without a batch axis: one field
    ``(size,)``, Covariance's pair ``(2, size)`` (x then y), or a Sobol group
    ``(n_params + 2, size)``. Data of n observations is an array ``(n, *observation_shape)``.
    """

    id: str
    make: Callable[[int], Accumulator]  # size -> a fresh accumulator
    results: Callable[[Accumulator], dict[str, Array]]  # every public result, by name
    rows: int | None = None  # None: an observation is one field; else (rows, size)
    mergeable: bool = True
    # Makes another accumulator of the same size that must not merge with or load from this one.
    make_other_config: Callable[[int], Accumulator] | None = None

    def observation_shape(self, size: int) -> tuple[int, ...]:
        return (size,) if self.rows is None else (self.rows, size)

    def sample(self, rng: np.random.Generator, n: int, size: int, dtype: Any = np.float64) -> Array:
        """n observations of standard normal values."""
        return rng.standard_normal((n, *self.observation_shape(size))).astype(dtype)

    def inputs(self, data: Array) -> tuple[Array, ...]:
        """The positional arguments of update() for one observation or a batch of them."""
        if self.id == "Covariance":
            return data[..., 0, :], data[..., 1, :]
        return (data,)

    def update(self, accumulator: Accumulator, data: Array) -> None:
        accumulator.update(*self.inputs(data))

    def update_one_by_one(self, accumulator: Accumulator, data: Array) -> None:
        for observation in data:
            self.update(accumulator, observation)


def moments_results(accumulator: stats.Moments) -> dict[str, Array]:
    out = {"mean": accumulator.mean()}
    if accumulator.order >= 2:
        out["variance_ddof0"] = accumulator.variance(ddof=0)
        out["variance_ddof1"] = accumulator.variance()
    if accumulator.order >= 3:
        out["skewness"] = accumulator.skewness()
    if accumulator.order >= 4:
        out["kurtosis"] = accumulator.kurtosis()
    return out


def sobol_results(accumulator: stats.Sobol) -> dict[str, Array]:
    out = {"first_order": accumulator.first_order(), "total_order": accumulator.total_order()}
    out.update(accumulator.confidence_intervals(0.9)._asdict())
    return out


THRESHOLDS = [-0.5, 0.0, 1.5]
PROBABILITIES = [0.1, 0.5, 0.9]
SOBOL_PARAMS = 3

CASES: list[Case] = [
    Case(
        "Moments",
        lambda size: stats.Moments(size),
        moments_results,
        make_other_config=lambda size: stats.Moments(size, order=3),
    ),
    Case(
        "Moments-order2",
        lambda size: stats.Moments(size, order=2),
        moments_results,
        make_other_config=lambda size: stats.Moments(size, order=4),
    ),
    Case(
        "Extrema",
        lambda size: stats.Extrema(size),
        lambda acc: {"min": acc.min(), "max": acc.max()},
    ),
    Case(
        "ThresholdExceedance",
        lambda size: stats.ThresholdExceedance(size, THRESHOLDS),
        lambda acc: {"counts": acc.counts()},
        make_other_config=lambda size: stats.ThresholdExceedance(size, [-0.5, 0.0, 2.0]),
    ),
    Case(
        "Quantiles",
        lambda size: stats.Quantiles(size, PROBABILITIES),
        lambda acc: {"quantiles": acc.quantiles()},
        mergeable=False,
        make_other_config=lambda size: stats.Quantiles(size, [0.1, 0.5]),
    ),
    Case(
        "Covariance",
        lambda size: stats.Covariance(size),
        lambda acc: {
            "covariance_ddof0": acc.covariance(ddof=0),
            "covariance_ddof1": acc.covariance(),
            "correlation": acc.correlation(),
        },
        rows=2,
    ),
    Case(
        "Sobol",
        lambda size: stats.Sobol(size, SOBOL_PARAMS),
        sobol_results,
        rows=SOBOL_PARAMS + 2,
        make_other_config=lambda size: stats.Sobol(size, SOBOL_PARAMS + 1),
    ),
]

MERGEABLE_CASES = [case for case in CASES if case.mergeable]


def case_params(cases: list[Case]) -> list[Any]:
    """pytest parameters named by the case's id."""
    return [pytest.param(case, id=case.id) for case in cases]


# ------------------------------------------------------------------------------------------------
# Exact comparisons
# ------------------------------------------------------------------------------------------------


def assert_results_identical(got: Mapping[str, Array], expected: Mapping[str, Array]) -> None:
    """Same names, shapes, dtypes and bits (NaN where the other has NaN)."""
    assert got.keys() == expected.keys()
    for name in expected:
        assert got[name].dtype == expected[name].dtype, name
        np.testing.assert_array_equal(got[name], expected[name], err_msg=name, strict=True)


def assert_states_identical(got: Mapping[str, Any], expected: Mapping[str, Any]) -> None:
    assert got.keys() == expected.keys()
    for name in expected:
        np.testing.assert_array_equal(
            np.asarray(got[name]), np.asarray(expected[name]), err_msg=name, strict=True
        )


# ------------------------------------------------------------------------------------------------
# Two-pass references (numpy/scipy over the whole data at once)
# ------------------------------------------------------------------------------------------------


def moments_reference(x: Array) -> dict[str, Array]:
    """Mean, variances, biased skewness and Fisher kurtosis of each column, in float64."""
    x = np.asarray(x, dtype=np.float64)
    return {
        "mean": np.mean(x, axis=0),
        "variance_ddof0": np.var(x, axis=0, ddof=0),
        "variance_ddof1": np.var(x, axis=0, ddof=1),
        "skewness": scipy.stats.skew(x, axis=0),
        "kurtosis": scipy.stats.kurtosis(x, axis=0),
    }


def covariance_reference(x: Array, y: Array) -> dict[str, Array]:
    """np.cov and np.corrcoef cell by cell."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    cells = range(x.shape[1])
    return {
        "covariance_ddof0": np.array([np.cov(x[:, i], y[:, i], ddof=0)[0, 1] for i in cells]),
        "covariance_ddof1": np.array([np.cov(x[:, i], y[:, i], ddof=1)[0, 1] for i in cells]),
        "correlation": np.array([np.corrcoef(x[:, i], y[:, i])[0, 1] for i in cells]),
    }


def exceedance_reference(x: Array, thresholds: list[float]) -> Array:
    """How many values of each cell are strictly greater than each threshold: (T, size)."""
    x = np.asarray(x, dtype=np.float64)
    return np.stack([np.count_nonzero(x > t, axis=0) for t in thresholds]).astype(np.uint64)


def rank_error(x: Array, estimate: Array, probabilities: Array) -> Array:
    """F_n(estimate) - p per probability and cell: the fraction of a cell's values (x: (n, size))
    at or below the estimate ((P, size)), minus p. A scale-free error, comparable across laws."""
    below = (x[None, :, :] <= estimate[:, None, :]).mean(axis=1)
    return below - np.asarray(probabilities)[:, None]


def correlation_columns(u: Array, v: Array) -> Array:
    """Pearson correlation of each column pair (two-pass)."""
    du, dv = u - u.mean(axis=0), v - v.mean(axis=0)
    return (du * dv).sum(axis=0) / np.sqrt((du * du).sum(axis=0) * (dv * dv).sum(axis=0))
