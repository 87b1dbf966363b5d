# SPDX-License-Identifier: BSD-3-Clause
"""The launcher's parameters: bounds, seeds, and pick-freeze groups whose A and B runs are
independent whatever the sampler."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats

from melissa.config import StudyOptions
from melissa.sampling import draw_parameters

SAMPLERS = ["random", "halton", "sobol", "lhs"]


def study(sampler: str, n: int = 64, seed: int = 3) -> StudyOptions:
    return StudyOptions(parameter_sweep_size=n, nb_parameters=3, l_bounds=[-1.0, 0.0, 10.0],
                        u_bounds=[1.0, 5.0, 11.0], sampler=sampler, field_names=["u"],
                        nb_time_steps=1, seed=seed)


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_draws_lie_in_bounds_and_repeat_with_the_seed(sampler: str) -> None:
    options = study(sampler)
    drawn = draw_parameters(options, sobol=False)
    assert drawn.shape == (64, 3)
    assert (drawn >= options.l_bounds).all() and (drawn <= options.u_bounds).all()
    np.testing.assert_array_equal(drawn, draw_parameters(options, sobol=False))
    assert not np.array_equal(drawn, draw_parameters(study(sampler, seed=4), sobol=False))


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_pick_freeze_groups(sampler: str) -> None:
    groups = draw_parameters(study(sampler), sobol=True)
    assert groups.shape == (64 * 5, 3)
    g = groups.reshape(64, 5, 3)
    a, b = g[:, 0], g[:, 1]
    for k in range(3):
        c = g[:, k + 2]
        np.testing.assert_array_equal(c[:, k], b[:, k])  # parameter k from B
        others = [j for j in range(3) if j != k]
        np.testing.assert_array_equal(c[:, others], a[:, others])  # the rest from A
    # Independent pairs: low-discrepancy halves paired point by point correlated up to 0.9.
    correlations = [abs(np.corrcoef(a[:, k], b[:, k])[0, 1]) for k in range(3)]
    assert max(correlations) < 0.35, correlations


DISTRIBUTIONS = [
    {"name": "norm", "args": {"loc": 300.0, "scale": 5.0}},
    {"name": "lognorm", "args": {"s": 0.5, "scale": 2.0}},
    {"name": "truncnorm", "args": {"a": -1.0, "b": 2.0, "loc": 10.0, "scale": 3.0}},
]


def distributed(sampler: str, n: int = 4096) -> StudyOptions:
    return StudyOptions(parameter_sweep_size=n, nb_parameters=3, sampler=sampler,
                        parameter_distributions=DISTRIBUTIONS, field_names=["u"],
                        nb_time_steps=1, seed=5)


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_draws_follow_their_distributions(sampler: str) -> None:
    options = distributed(sampler)
    drawn = draw_parameters(options, sobol=False)
    for k, distribution in enumerate(options.distributions()):
        test = scipy.stats.kstest(drawn[:, k], distribution.cdf)
        assert test.pvalue > 0.01, (sampler, DISTRIBUTIONS[k], test)
    # The truncated normal stays within its truncation: 10 + 3 * [-1, 2].
    assert drawn[:, 2].min() >= 7.0 and drawn[:, 2].max() <= 16.0
    # A normal with its sample of a uniform: not the bounds' scaling.
    assert abs(drawn[:, 0].mean() - 300.0) < 0.5 and abs(drawn[:, 0].std() - 5.0) < 0.5


def test_pick_freeze_groups_of_distributions_share_their_columns() -> None:
    groups = draw_parameters(distributed("halton", n=16), sobol=True).reshape(16, 5, 3)
    for k in range(3):
        np.testing.assert_array_equal(groups[:, k + 2, k], groups[:, 1, k])
        others = [j for j in range(3) if j != k]
        np.testing.assert_array_equal(groups[:, k + 2, others], groups[:, 0, others])


def test_surrogate_ranges_cut_unbounded_supports() -> None:
    low, high = distributed("random").ranges()
    norm = scipy.stats.norm(300.0, 5.0)
    assert low[0] == pytest.approx(norm.ppf(1e-3)) and high[0] == pytest.approx(norm.ppf(1 - 1e-3))
    assert low[1] == 0.0  # lognorm's support starts at 0
    assert (low[2], high[2]) == pytest.approx((7.0, 16.0))
    assert study("random").ranges() == ([-1.0, 0.0, 10.0], [1.0, 5.0, 11.0])
