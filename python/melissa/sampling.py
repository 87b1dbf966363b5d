# SPDX-License-Identifier: BSD-3-Clause
"""Drawing a study's parameters, and the pick-freeze groups of a Sobol study; the samplers the
launcher takes the parameters of its next simulations from, drawn up front (FixedSampler) or
while the study runs from the losses the training server reports (ActiveSampler, Breed)."""

from __future__ import annotations

import abc
import math
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy.stats import qmc

from melissa.config import ActiveSampling, Config, ConfigError, StudyOptions
from melissa.plugins import load_class

__all__ = ["ActiveSampler", "BreedSampler", "FixedSampler", "Sampler", "draw_parameters",
           "draw_replacement_group", "make_sampler"]


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



class Sampler(abc.ABC):
    """Where the launcher takes the parameters of the simulations it has not launched yet, by
    id. Deterministic: the same seed and the same observations, in the same order, draw the same
    parameters; state() and load_state() carry that over a stopped and resumed study."""

    origins: list[str]  # how each simulation's parameters were drawn, by id

    @abc.abstractmethod
    def draw(self, n: int) -> npt.NDArray[np.float64]:
        """The parameters of the next `n` simulations, shape (n, nb_parameters)."""

    @abc.abstractmethod
    def observe(self, losses: Mapping[int, float]) -> None:
        """The training server's latest loss of each simulation it trained on."""

    @abc.abstractmethod
    def parameters(self) -> npt.NDArray[np.float64]:
        """The parameters of every simulation drawn so far, by id."""

    @abc.abstractmethod
    def state(self) -> dict[str, Any]:
        """What resumes the draws where they stood (JSON)."""

    @abc.abstractmethod
    def load_state(self, state: dict[str, Any]) -> None: ...


class FixedSampler(Sampler):
    """Every simulation drawn before the study starts, by study_options.sampler."""

    def __init__(self, study: StudyOptions, sobol: bool) -> None:
        self._all = draw_parameters(study, sobol)
        self._drawn = 0
        self.origins = []
        self._origin = study.sampler

    def draw(self, n: int) -> npt.NDArray[np.float64]:
        first, self._drawn = self._drawn, min(self._drawn + n, len(self._all))
        self.origins += [self._origin] * (self._drawn - first)
        return self._all[first:self._drawn]

    def observe(self, losses: Mapping[int, float]) -> None:
        """Draws made up front: losses change none of them."""

    def parameters(self) -> npt.NDArray[np.float64]:
        return self._all[:self._drawn]

    def state(self) -> dict[str, Any]:
        return {"drawn": self._drawn}

    def load_state(self, state: dict[str, Any]) -> None:
        self._drawn = 0
        self.origins = []
        self.draw(state["drawn"])


class ActiveSampler(Sampler):
    """A sampler that draws while the study runs: the first `initial` simulations (the held-out
    ones among them) by study_options.sampler, each later one by propose(), given the losses
    observed so far. Subclass it and name it as dl_config.active_sampling.method =
    "module:Class" to bring your own; dl_config.active_sampling.options reach it as
    self.options.

    Points live in the unit cube of the parameters' quantiles: propose() returns one there, and
    each parameter's distribution (or its bounds) maps it to a value, so that draws respect the
    bounds whatever propose() does."""

    def __init__(self, study: StudyOptions, active: ActiveSampling, n_simulations: int,
                 initial: int) -> None:
        self.study, self.active, self.options = study, active, active.options
        self.n_simulations, self.initial = n_simulations, initial
        sample_seed, _ = np.random.SeedSequence(study.seed).spawn(2)
        # The very points of a study without active sampling: its initial simulations are
        # those, and the exploration draws of Breed take the sequence up where they fall.
        self.exploration = _unit_sample(study.sampler, n_simulations, study.nb_parameters,
                                        sample_seed)
        self.unit: list[npt.NDArray[np.float64]] = []
        self.origins = []
        self.losses: dict[int, float] = {}

    @abc.abstractmethod
    def propose(self, index: int,
                rng: np.random.Generator) -> tuple[npt.NDArray[np.float64], str]:
        """The point of the unit cube [0, 1]^nb_parameters of simulation `index` (from
        `initial` on), and a word on how it was drawn (recorded in parameters.csv). `rng` is
        this simulation's own: seeded by the study's seed and `index`."""

    def progress(self, index: int) -> float:
        """How far simulation `index` is through the draws after the initial ones: 0 at the
        first, 1 at the study's last."""
        return min(1.0, max(0.0, (index - self.initial) /
                            max(1, self.n_simulations - self.initial - 1)))

    def draw(self, n: int) -> npt.NDArray[np.float64]:
        p = self.study.nb_parameters
        points: list[npt.NDArray[np.float64]] = []
        origins: list[str] = []
        for index in range(len(self.unit), len(self.unit) + n):
            origin: str
            if index < self.initial:
                point, origin = self.exploration[index], self.study.sampler
            else:
                point, origin = self.propose(index,
                                             np.random.default_rng([self.study.seed, 2, index]))
                point = np.asarray(point, dtype=np.float64)
                if point.shape != (p,) or not ((point >= 0) & (point <= 1)).all():
                    raise ValueError(
                        f"{type(self).__name__}.propose gave {point.tolist()} for simulation "
                        f"{index}: a point of the unit cube [0, 1]^{p} is expected")
            points.append(point)
            origins.append(origin)
        # Kept only once all are drawn: a failed draw leaves the state as it was.
        self.unit += points
        self.origins += origins
        return _transform(self.study, np.array(points).reshape(n, p))

    def observe(self, losses: Mapping[int, float]) -> None:
        # A server resumed from an older checkpoint may speak of simulations redrawn since.
        self.losses.update({int(sim): float(loss) for sim, loss in losses.items()
                            if int(sim) < len(self.unit) and math.isfinite(loss)})

    def parameters(self) -> npt.NDArray[np.float64]:
        if not self.unit:
            return np.empty((0, self.study.nb_parameters))
        return _transform(self.study, np.array(self.unit))

    def state(self) -> dict[str, Any]:
        return {"unit": [point.tolist() for point in self.unit], "origins": self.origins,
                "losses": {str(sim): loss for sim, loss in self.losses.items()}}

    def load_state(self, state: dict[str, Any]) -> None:
        self.unit = [np.asarray(point, dtype=np.float64) for point in state["unit"]]
        self.origins = list(state["origins"])
        self.losses = {int(sim): float(loss) for sim, loss in state["losses"].items()}


class BreedSampler(ActiveSampler):
    """Breed (Dymchenko, Purandare, Raffin, "MelissaDL x Breed: Towards Data-Efficient On-line
    Supervised Training of Multi-parametric Surrogates with Active Learning", 2024): each new
    simulation is, with the exploration share, the sampler's next point; otherwise a child of a
    parent chosen among the `parents` share of highest losses with a probability proportional
    to its loss, perturbed by a Gaussian of width sigma and reflected into the bounds. The
    exploration share and sigma go linearly from their start to their end values over the
    draws after the initial ones (the paper's schedule: explore first, then refine)."""

    def schedule(self, index: int) -> tuple[float, float]:
        """(Exploration share, sigma) at simulation `index`."""
        a, t = self.active, self.progress(index)
        return (a.exploration_start + t * (a.exploration_end - a.exploration_start),
                a.sigma_start + t * (a.sigma_end - a.sigma_start))

    def propose(self, index: int,
                rng: np.random.Generator) -> tuple[npt.NDArray[np.float64], str]:
        explore, sigma = self.schedule(index)
        if rng.random() < explore or not self.losses:
            return self.exploration[index], "exploration"
        # Ties broken by id: the same losses choose the same parents whatever their order.
        ranked = sorted(self.losses, key=lambda sim: (-self.losses[sim], sim))
        top = ranked[:math.ceil(self.active.parents * len(ranked))]
        weights = np.array([self.losses[sim] for sim in top])
        rank = int(rng.choice(len(top), p=weights / weights.sum() if weights.sum() > 0 else None))
        parent = top[rank]
        child = self.unit[parent] + rng.normal(0.0, sigma, self.study.nb_parameters)
        # Reflected into the cube: a child beyond a bound lands as far inside it (clipped where
        # a perturbation crosses the whole range, at least 2 sigma away).
        child = np.clip(1.0 - np.abs(1.0 - np.abs(child)), 0.0, 1.0)
        return child, f"child of {parent} (loss rank {rank + 1} of {len(ranked)})"


def make_sampler(config: Config, config_dir: Path) -> Sampler:
    """The study's sampler; a user's sampler class is loaded and checked now, before anything
    is launched."""
    active = config.dl_config.active_sampling if config.dl_config is not None else None
    if active is None:
        return FixedSampler(config.study_options, config.sobol)
    arguments = (config.study_options, active, config.n_simulations, config.initial_simulations)
    if active.method == "breed":
        return BreedSampler(*arguments)
    try:
        # Abstract as a base; the user's class is checked concrete by its instantiation.
        sampler = load_class(active.method, config_dir, ActiveSampler)  # type: ignore[type-abstract]
        return sampler(*arguments)
    except (ImportError, AttributeError, TypeError, ValueError) as error:
        # An abstract class (propose() missing) fails here too, saying which method it lacks.
        raise ConfigError(f"dl_config.active_sampling.method: {error}") from None
