# SPDX-License-Identifier: BSD-3-Clause
"""Sobol convergence: the interval widths the server ranks sum up and the launcher adds up,
and `sa_config.sobol_ci_target`, which stops a study once they are narrow enough.

The studies run `melissa run` for real (launcher, a 2-rank MPI server, Python solvers) on a
linear model of known indices.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from test_study import melissa, study_config

from melissa import convergence

# y = x1 + c x2, x1 and x2 uniform on [0, 1], c = C (1 + t) at cell i and time step t: additive,
# so first and total indices are equal, S1 = 1 / (1 + c^2) and S2 = c^2 / (1 + c^2).
C = np.array([0.5, 1.0, 2.0])
STEPS = 2
SOLVER = f"""\
import sys

import numpy as np

from melissa import client

x1, x2 = (float(v) for v in sys.argv[1:3])
c = np.array({C.tolist()})
client.init("y", {len(C)})
for t in range({STEPS}):
    client.send("y", x1 + c * (1 + t) * x2)
client.finalize()
"""
GROUP = 4  # A, B, C1, C2


def analytic(step: int) -> np.ndarray:
    """S (= ST) of each parameter at each cell, shape (parameter, cell)."""
    c2 = (C * (1 + step)) ** 2
    return np.stack([1 / (1 + c2), c2 / (1 + c2)])


def linear_study(tmp_path: Path, groups: int, sa: dict[str, object]) -> Path:
    solver = tmp_path / "linear.py"
    solver.write_text(SOLVER)
    # The random sampler with seed 0: with it, the rule is first met between 40 and 44 groups
    # (score or Fisher-z intervals), and every index lies in its interval from there to 60.
    return study_config(
        tmp_path, command=f"{sys.executable} {solver}",
        study={"parameter_sweep_size": groups, "nb_parameters": 2, "l_bounds": [0.0, 0.0],
               "u_bounds": [1.0, 1.0], "field_names": ["y"], "nb_time_steps": STEPS,
               "sampler": "random", "seed": 0},
        sa={"mean": True, "sobol_indices": True, **sa},
        # Job slots are mostly idle (each solver waits on its connection): 8 keep 2 cores busy.
        launcher={"job_limit": 8})


def widths(ds: xr.Dataset, step: int | None = None) -> np.ndarray:
    """Every interval's width in results.nc, or those of one time step."""
    out = []
    for order in ("first", "total"):
        width = ds[f"y_sobol_{order}_upper"] - ds[f"y_sobol_{order}_lower"]
        out.append((width if step is None else width.isel(time=step)).values.ravel())
    return np.concatenate(out)


# -- the figures, without processes ------------------------------------------------------------

def test_histogram_quantiles_read_widths_to_a_few_percent() -> None:
    rng = np.random.default_rng(3)
    sample = np.exp(rng.normal(-1.0, 0.8, 20_000))
    histogram = convergence._histogram(sample)
    for q in (0.05, 0.5, 0.95):
        assert convergence.quantile(histogram, q) == pytest.approx(np.quantile(sample, q),
                                                                   rel=0.03)
    assert np.isnan(convergence.quantile(np.zeros(convergence.N_BINS, np.int64), 0.5))


def test_ranks_add_up_to_the_figures_of_the_whole_field() -> None:
    """Two ranks of half the cells each give the figures of one rank holding them all: the
    counts exactly, wider-than-target included, and every bin of the histograms."""
    from melissa import stats

    rng = np.random.default_rng(5)
    sobol = stats.Sobol(40, 2)
    values = rng.random((50, 4, 40)) ** 3
    sobol.update(values)
    halves = [stats.Sobol(20, 2), stats.Sobol(20, 2)]
    halves[0].update(values[..., :20])
    halves[1].update(values[..., 20:])

    def state(s: stats.Sobol) -> dict[str, object]:
        return {k: v for k, v in s.state_dict().items() if k not in ("size", "n_params")}

    whole = convergence.rank_metrics([(0, 40, {"sobol": state(sobol)})], 2, 0, 0.3, 50)
    parts = [convergence.rank_metrics([(0, 20, {"sobol": state(h)})], 2, 0, 0.3, 50)
             for r, h in enumerate(halves)]
    one = convergence.Figures.combine([{**whole, "interval": 1.0}])
    two = convergence.Figures.combine([{**p, "interval": 1.0} for p in parts])
    assert one is not None and two is not None
    assert (one.intervals, one.wider) == (two.intervals, two.wider) == (160, one.wider)
    np.testing.assert_array_equal(one.every, two.every)
    bounds = sobol.confidence_intervals(convergence.LEVEL)
    exact = np.concatenate([(bounds.first_upper - bounds.first_lower).ravel(),
                            (bounds.total_upper - bounds.total_lower).ravel()])
    assert one.wider == np.count_nonzero(exact > 0.3) > 0
    assert convergence.Figures.combine([{**whole, "interval": 1.0}, None]) is None


def test_complete_groups_count_whole_groups_only() -> None:
    assert convergence.complete_groups({0, 1, 2, 3, 4, 5, 6, 9}, 4) == 1
    assert convergence.complete_groups(set(), 4) == 0


# -- whole studies -----------------------------------------------------------------------------

def test_target_stops_the_study_once_the_intervals_are_narrow_enough(tmp_path: Path) -> None:
    planned, target = 100, 0.6
    done = melissa("run", str(linear_study(tmp_path, planned, {"sobol_ci_target": target})),
                   timeout=120)
    # The groups never started are not_run, and not a failure: the study did what it asked.
    assert done.returncode == 0, done.stdout + done.stderr
    summary = re.search(r"Sobol indices from (\d+) groups of at most 100 \(parameter_sweep_size"
                        r"\): stopped on sobol_ci_target 0.6, met by 95% of the intervals at "
                        r"(\d+) groups", done.stdout)
    assert summary, done.stdout
    used, met_at = int(summary[1]), int(summary[2])
    assert convergence.MIN_GROUPS <= met_at <= used < planned
    with xr.open_dataset(tmp_path / "out" / "results.nc") as ds:
        status = ds["simulation_status"].values.reshape(planned, GROUP)
        # Whole groups from the first on: groups running when the target was met completed.
        assert (status[:used] == 0).all() and (status[used:] == 2).all()
        assert (ds["y_count"].values == 2 * used).all()
        assert ds.attrs["sobol_groups"] == used
        assert ds.attrs["sobol_stopped_by"] == (f"sobol_ci_target 0.6 met by 95% of the 95 % "
                                                f"confidence intervals at {met_at} groups")
        # The rule holds on what was written.
        assert np.mean(widths(ds) <= target) >= 0.95
        for step in range(STEPS):
            exact = analytic(step)
            for order in ("first", "total"):
                lower = ds[f"y_sobol_{order}_lower"].isel(time=step).values
                upper = ds[f"y_sobol_{order}_upper"].isel(time=step).values
                assert ((lower <= exact) & (exact <= upper)).all(), (order, step, lower, upper)
        last = widths(ds, -1)
    # The summary's widths are those of results.nc, to the histogram's resolution, and of
    # every group used: the server's figures were waited for.
    line = re.search(r"at the last time step median ([\d.e-]+), 95th percentile ([\d.e-]+)",
                     done.stdout)
    assert line, done.stdout
    assert float(line[1]) == pytest.approx(np.median(last), rel=0.08)
    assert float(line[2]) == pytest.approx(np.quantile(last, 0.95), rel=0.08)
    assert "The server's last figures hold" not in done.stdout
    assert re.search(r"\d+\.\d% of the intervals are no wider than sobol_ci_target 0.6",
                     done.stdout)
    assert "too uncertain" not in done.stdout
    # The live progress showed the widths and what the rule still asked.
    assert re.search(r"Sobol CI widths \(\d+ groups\): last step median [\d.]+, p95 [\d.]+; "
                     r"\d+% <= target 0.6 \(needs 95%", done.stderr), done.stderr


@pytest.fixture(scope="module")
def small_study(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """10 groups, no target: every group runs, and the intervals are too wide to read."""
    tmp_path = tmp_path_factory.mktemp("small")
    done = melissa("run", str(linear_study(tmp_path, 10, {})), timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return tmp_path, done.stdout


def test_without_target_every_group_runs(small_study: tuple[Path, str]) -> None:
    tmp_path, stdout = small_study
    assert "Sobol indices from 10 groups: every group of parameter_sweep_size 10 ran." in stdout
    assert "40/40 simulations completed" in stdout
    assert re.search(r"their widths: at the last time step median [\d.]+, 95th percentile "
                     r"[\d.]+; over every cell, time step, parameter and order median [\d.]+",
                     stdout), stdout
    assert "sobol_ci_target" not in stdout.split("Warning")[0]
    with xr.open_dataset(tmp_path / "out" / "results.nc") as ds:
        assert (ds["simulation_status"].values == 0).all()
        assert (ds["y_count"].values == 20).all()
        assert ds.attrs["sobol_groups"] == 10
        assert ds.attrs["sobol_stopped_by"] == "every group of parameter_sweep_size 10 ran"


def test_too_wide_intervals_are_flagged_with_a_hint(small_study: tuple[Path, str]) -> None:
    tmp_path, stdout = small_study
    with xr.open_dataset(tmp_path / "out" / "results.nc") as ds:
        median = np.median(widths(ds))
    assert median > convergence.TOO_WIDE
    warning = re.search(r"Warning: the Sobol indices are too uncertain to read: the median "
                        r"width of their 95 % intervals is ([\d.]+), above 0.5", stdout)
    assert warning, stdout
    assert float(warning[1]) == pytest.approx(median, rel=0.08)
    assert "study_options.parameter_sweep_size" in stdout
    assert "sa_config.sobol_ci_target" in stdout
