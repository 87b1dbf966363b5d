# SPDX-License-Identifier: BSD-3-Clause
"""The launcher's parameters: bounds, seeds, and pick-freeze groups whose A and B runs are
independent whatever the sampler."""

from __future__ import annotations

import numpy as np
import pytest

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
