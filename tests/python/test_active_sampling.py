# SPDX-License-Identifier: BSD-3-Clause
"""Samplers the launcher draws from while a study runs: Breed's determinism, its draws near the
highest losses and within bounds, its schedule, a resumed sampler's draws, the user's sampler
class and its errors, and dl_config.active_sampling's errors. A whole study with Breed runs in
test_training.py."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from melissa.config import ActiveSampling, ConfigError, StudyOptions, parse_config
from melissa.sampling import BreedSampler, FixedSampler, draw_parameters, make_sampler

N, INITIAL = 200, 20
LOW, HIGH = np.array([-1.0, 10.0]), np.array([1.0, 11.0])


def options(seed: int = 3) -> StudyOptions:
    return StudyOptions(parameter_sweep_size=N, nb_parameters=2, l_bounds=LOW.tolist(),
                        u_bounds=HIGH.tolist(), sampler="halton", field_names=["u"],
                        nb_time_steps=1, seed=seed)


def breed(seed: int = 3, **active: Any) -> BreedSampler:
    return BreedSampler(options(seed), ActiveSampling(method="breed", **active), N, INITIAL)


def corner_loss(point: npt.NDArray[np.float64]) -> float:
    """A hard region: the loss is high near the corner (1, 10) of the bounds only."""
    unit = (point - LOW) / (HIGH - LOW)
    return float(np.exp(-np.sum((unit - [1.0, 0.0]) ** 2) / 0.02)) + 1e-3


def unit(points: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    return (points - LOW) / (HIGH - LOW)


def study(sampler: BreedSampler, loss: Any = corner_loss, every: int = 5,
          until: int = N) -> npt.NDArray[np.float64]:
    """The draws of a study whose simulations report their loss in batches of `every`."""
    drawn = sampler.draw(INITIAL) if not sampler.unit else sampler.parameters()
    while len(drawn) < until:
        sampler.observe({sim: loss(drawn[sim]) for sim in range(len(drawn))})
        drawn = np.concatenate([drawn, sampler.draw(min(every, until - len(drawn)))])
    return drawn


def children(sampler: BreedSampler) -> list[tuple[int, int, int, int]]:
    """(Simulation, parent, the parent's loss rank, simulations ranked) of each child."""
    out = []
    for sim, origin in enumerate(sampler.origins):
        found = re.fullmatch(r"child of (\d+) \(loss rank (\d+) of (\d+)\)", origin)
        if found:
            out.append((sim, *map(int, found.groups())))
    return out


def test_breed_repeats_with_the_seed_and_the_observations() -> None:
    first = study(breed())
    np.testing.assert_array_equal(first, study(breed()))
    # The initial simulations are those of a study without active sampling.
    np.testing.assert_array_equal(first[:INITIAL], draw_parameters(options(), False)[:INITIAL])
    assert not np.array_equal(first[INITIAL:], study(breed(seed=4))[INITIAL:])
    elsewhere = study(breed(), loss=lambda p: corner_loss(LOW + HIGH - p))  # the other corner
    assert not np.array_equal(first[INITIAL:], elsewhere[INITIAL:])


def test_breed_draws_near_the_highest_losses_within_bounds() -> None:
    sampler = breed()
    drawn = study(sampler)
    assert (drawn >= LOW).all() and (drawn <= HIGH).all()
    bred = children(sampler)
    assert len(bred) > (N - INITIAL) // 2
    for sim, parent, rank, ranked in bred:
        assert parent < sim
        assert rank <= np.ceil(0.25 * ranked), "parents are among the highest quarter"
    # A tenth of the cube's area lies within 0.35 of the corner (0.1 * pi / 4 * 0.35^2 * 4);
    # most children land there.
    near = np.linalg.norm(unit(drawn) - [1.0, 0.0], axis=1) < 0.35
    assert near[:INITIAL].mean() < 0.2
    assert near[[sim for sim, *_ in bred]].mean() > 0.6


def test_breed_schedule_goes_from_exploration_to_refinement() -> None:
    sampler = breed(exploration_start=1.0, exploration_end=0.0, sigma_start=0.2,
                    sigma_end=0.01)
    assert sampler.schedule(INITIAL) == (1.0, 0.2)
    assert sampler.schedule(N - 1) == pytest.approx((0.0, 0.01))
    middle = INITIAL + (N - INITIAL - 1) / 2
    assert sampler.schedule(int(middle)) == pytest.approx((0.5, 0.105), abs=0.01)
    study(sampler)
    bred = children(sampler)
    quarter = (N - INITIAL) // 4
    early = sum(INITIAL <= sim < INITIAL + quarter for sim, *_ in bred)
    late = sum(sim >= N - quarter for sim, *_ in bred)
    assert early < 0.35 * quarter and late > 0.8 * quarter
    # Children lie closer to their parents as sigma narrows (by less than sigma: reflection at
    # the corner shortens the early, wide steps).
    points = unit(sampler.parameters())
    spread = {sim: np.abs(points[sim] - points[parent]).mean() for sim, parent, *_ in bred}
    first_half = [d for sim, d in spread.items() if sim < INITIAL + (N - INITIAL) // 2]
    second_half = [d for sim, d in spread.items() if sim >= INITIAL + (N - INITIAL) // 2]
    assert np.mean(second_half) < 0.6 * np.mean(first_half)


def test_breed_without_losses_explores() -> None:
    sampler = breed(exploration_start=0.0, exploration_end=0.0)
    drawn = sampler.draw(INITIAL + 10)
    assert sampler.origins[INITIAL:] == ["exploration"] * 10
    np.testing.assert_array_equal(drawn, draw_parameters(options(), False)[:INITIAL + 10])


def test_resumed_sampler_draws_as_if_never_stopped() -> None:
    never_stopped = breed()
    whole = study(never_stopped)
    stopped = breed()
    study(stopped, until=90)
    state = json.loads(json.dumps(stopped.state()))  # as sampler.json keeps it
    resumed = breed()
    resumed.load_state(state)
    np.testing.assert_array_equal(study(resumed), whole)
    assert resumed.origins == never_stopped.origins


def test_fixed_sampler_draws_the_study_up_front_and_resumes() -> None:
    fixed = FixedSampler(options(), sobol=False)
    np.testing.assert_array_equal(fixed.draw(N), draw_parameters(options(), False))
    assert fixed.draw(1).shape == (0, 2)
    again = FixedSampler(options(), sobol=False)
    again.load_state(fixed.state())
    np.testing.assert_array_equal(again.parameters(), fixed.parameters())
    assert again.origins == ["halton"] * N


def training(tmp_path: Path, **active: Any) -> dict[str, Any]:
    return {
        "study_options": {"parameter_sweep_size": 40, "nb_parameters": 3,
                          "l_bounds": [0.0, 0.0, 0.0], "u_bounds": [1.0, 2.0, 3.0],
                          "field_names": ["u"], "nb_time_steps": 4, "seed": 3},
        "dl_config": {"validation_simulations": 4, "active_sampling": active},
        "client_config": {"executable_command": f"{sys.executable} solver.py"},
    }


CENTRE = """
import numpy as np
from melissa.sampling import ActiveSampler

class Centre(ActiveSampler):
    def propose(self, index, rng):
        return np.full(self.study.nb_parameters, self.options["at"]), "centre"

class Outside(ActiveSampler):
    def propose(self, index, rng):
        return np.full(self.study.nb_parameters, 1.5), "outside"

class Abstract(ActiveSampler):
    pass
"""


def test_user_sampler_draws_after_the_initial_simulations(tmp_path: Path) -> None:
    (tmp_path / "centre.py").write_text(CENTRE)
    config = parse_config(training(tmp_path, method="centre:Centre", initial=8,
                                   options={"at": 0.5}))
    sampler = make_sampler(config, tmp_path)
    drawn = sampler.draw(10)
    assert sampler.origins == ["random"] * 8 + ["centre"] * 2
    np.testing.assert_array_equal(drawn[8:], [[0.5, 1.0, 1.5]] * 2)


@pytest.mark.parametrize(
    ("method", "message"),
    [("no_such_module:Sampler", "No module named 'no_such_module'"),
     ("json:JSONDecoder", "json:JSONDecoder is not a subclass of "
      "melissa.sampling.ActiveSampler"),
     ("centre:Missing", "has no attribute 'Missing'"),
     ("centre:Abstract", "abstract class Abstract with abstract method propose")],
)
def test_bad_user_sampler_is_refused(tmp_path: Path, method: str, message: str) -> None:
    (tmp_path / "centre.py").write_text(CENTRE)
    with pytest.raises(ConfigError, match=f"dl_config.active_sampling.method: .*{message}"):
        make_sampler(parse_config(training(tmp_path, method=method)), tmp_path)


def test_user_sampler_outside_the_unit_cube_is_refused(tmp_path: Path) -> None:
    (tmp_path / "centre.py").write_text(CENTRE)
    sampler = make_sampler(parse_config(training(tmp_path, method="centre:Outside",
                                                 initial=8)), tmp_path)
    with pytest.raises(ValueError, match=r"Outside.propose gave \[1.5, 1.5, 1.5\] for "
                       r"simulation 8: a point of the unit cube \[0, 1\]\^3 is expected"):
        sampler.draw(9)


@pytest.mark.parametrize(
    ("active", "message"),
    [({"method": "bogus"}, "'bogus' is neither 'breed' nor a user's sampler 'module:Class'"),
     ({"method": "breed", "initial": 4}, "active_sampling.initial 4 must exceed "
      "validation_simulations 4"),
     ({"method": "breed", "initial": 41}, "at most the study's 40 simulations"),
     ({"method": "breed", "sigma_start": 0.6}, "dl_config.active_sampling.sigma_start"),
     ({"method": "breed", "exploration_end": 1.5}, "dl_config.active_sampling.exploration_end"),
     ({"method": "breed", "width": 0.1}, "dl_config.active_sampling.width"),
     ({}, "dl_config.active_sampling.method")],
)
def test_bad_active_sampling_is_refused(tmp_path: Path, active: dict[str, Any],
                                        message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_config(training(tmp_path, **active))


def test_default_initial_share() -> None:
    config = parse_config(training(Path("."), method="breed"))
    assert config.initial_simulations == 10  # a quarter of 40
    assert parse_config({**training(Path(".")), "dl_config": {}}).initial_simulations == 40
