# SPDX-License-Identifier: BSD-3-Clause
"""Drawing a study's parameters, and the pick-freeze groups of a Sobol study."""

from __future__ import annotations

import warnings

import numpy as np
import numpy.typing as npt
from scipy.stats import qmc

from melissa.config import StudyOptions

__all__ = ["draw_parameters", "draw_replacement_group"]


def _unit_sample(sampler: str, n: int, dimensions: int,
                 seed: int | np.random.SeedSequence) -> npt.NDArray[np.float64]:
    rng = np.random.default_rng(seed)
    if sampler == "random":
        return rng.random((n, dimensions))
    engine: qmc.QMCEngine
    if sampler == "halton":
        engine = qmc.Halton(dimensions, rng=rng)
    elif sampler == "lhs":
        engine = qmc.LatinHypercube(dimensions, rng=rng)
    else:
        engine = qmc.Sobol(dimensions, rng=rng)
    with warnings.catch_warnings():
        # Sobol' points balance best in powers of 2; other sizes are still valid draws.
        warnings.filterwarnings("ignore", message=".*balance properties.*", category=UserWarning)
        return engine.random(n)


def draw_parameters(study: StudyOptions, sobol: bool) -> npt.NDArray[np.float64]:
    """The parameters of every simulation, shape (n_simulations, nb_parameters), by id.

    With Sobol indices, simulation g * (p + 2) + j is member j of group g: j = 0 is A, j = 1 is
    B, j = k + 2 is C_k (A with parameter k taken from B). A and B are the two halves of one
    2p-dimensional sample, B's rows in a random order: the pick-freeze estimators need each pair
    (A_i, B_i) independent, and the halves of a low-discrepancy sample come paired point by
    point (at 8 points of 10 Sobol' dimensions, matching columns correlate up to 0.8; two
    differently scrambled engines correlate more still).
    """
    p, n = study.nb_parameters, study.parameter_sweep_size
    sample_seed, order_seed = np.random.SeedSequence(study.seed).spawn(2)
    if not sobol:
        return _transform(study, _unit_sample(study.sampler, n, p, sample_seed))
    unit = _unit_sample(study.sampler, n, 2 * p, sample_seed)
    order = np.random.default_rng(order_seed).permutation(n)
    return _pick_freeze(_transform(study, unit[:, :p]), _transform(study, unit[order, p:]))


def draw_replacement_group(study: StudyOptions, index: int) -> npt.NDArray[np.float64]:
    """The parameters of the `index`-th Sobol group drawn to replace one dropped because a
    member failed for good, shape (nb_parameters + 2, nb_parameters). Plain random draws, from
    a stream of their own: the same seed redraws the same groups, and the study's sample is
    left as it was drawn."""
    p = study.nb_parameters
    unit = np.random.default_rng([study.seed, 1, index]).random((1, 2 * p))
    return _pick_freeze(_transform(study, unit[:, :p]), _transform(study, unit[:, p:]))


def _transform(study: StudyOptions, unit: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Points of the unit cube to parameters, column by column through each distribution's
    inverse CDF: the sampler's uniformity becomes the distributions' (a uniform parameter is
    scaled exactly, as qmc.scale does)."""
    if study.parameter_distributions is None:
        assert study.l_bounds is not None and study.u_bounds is not None
        return qmc.scale(unit, study.l_bounds, study.u_bounds)
    return np.column_stack([distribution.ppf(unit[:, k])
                            for k, distribution in enumerate(study.distributions())])


def _pick_freeze(a: npt.NDArray[np.float64],
                 b: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Groups of rows A, B, C_1..C_p (C_k: A with parameter k from B), stacked by group."""
    n, p = a.shape
    groups = np.repeat(a[:, None, :], p + 2, axis=1)
    groups[:, 1] = b
    for k in range(p):
        groups[:, k + 2, k] = b[:, k]
    return groups.reshape(n * (p + 2), p)

