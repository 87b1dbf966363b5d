# SPDX-License-Identifier: BSD-3-Clause
"""The heat-equation examples: they build against the installed package, the C, Fortran and
Python solvers compute the same fields on 1 and 3 MPI ranks, and the demo's study writes results
that xarray reads labelled, shaped and in units."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import json5
import numpy as np
import pytest
import xarray as xr

ROOT = Path(__file__).resolve().parents[2]
HEAT = ROOT / "examples" / "heat"
MPI_ROOT = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}


@pytest.fixture(scope="module")
def build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    build = tmp_path_factory.mktemp("heat")
    subprocess.run([str(HEAT / "build.sh"), str(build)], check=True, timeout=300)
    return build


def test_heat_solvers_agree_across_languages_and_ranks(build: Path) -> None:
    done = subprocess.run([sys.executable, str(HEAT / "check_solvers.py"), str(build)],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, **MPI_ROOT})
    assert done.returncode == 0, done.stdout + done.stderr


def test_statistics_demo_prints_estimates_beside_exact_values() -> None:
    done = subprocess.run([sys.executable, str(ROOT / "examples" / "stats_demo.py")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "Sobol indices of the Ishigami function" in done.stdout


def test_demo_results_are_labelled_shaped_and_in_units(build: Path, tmp_path: Path) -> None:
    """The demo's config (make demo), on 2 groups of 10 time steps: its results.nc, opened
    with xarray, has the grid's coordinates, the parameters' names, the solver's time and the
    temperature's units, and `melissa plot` draws its maps."""
    config = json5.loads((HEAT / "config_c.json").read_text())
    study = config["study_options"]
    study.update(parameter_sweep_size=2, nb_time_steps=10,
                 coordinates_file=str(build / "grid-21x21.nc"))
    config["client_config"]["executable_command"] = f"{build / 'heat_c'} --nx 21 --ny 21 " \
                                                    "--steps 10"
    config["output_dir"] = str(tmp_path / "out")
    path = tmp_path / "config.json"
    path.write_text(json5.dumps(config))
    melissa = [sys.executable, "-m", "melissa"]
    env = {**os.environ, **MPI_ROOT}
    done = subprocess.run([*melissa, "run", str(path)], capture_output=True, text=True,
                          timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    with xr.open_dataset(tmp_path / "out" / "results.nc") as ds:
        mean = ds["temperature_mean"]
        assert mean.dims == ("time", "y", "x") and mean.shape == (10, 21, 21)
        assert mean.attrs["units"] == "degC" and ds["temperature_variance"].attrs["units"]
        np.testing.assert_allclose(ds["x"], np.arange(1, 22) / 22)
        assert ds["x"].attrs["units"] == "m"
        np.testing.assert_allclose(ds["time"], np.arange(1, 11) * 0.2 / 22**2)
        assert ds["time"].attrs["units"] == "s"
        assert list(ds["parameter"].values) == ["initial", "left", "right", "bottom", "top"]
        assert ds.attrs["Conventions"].startswith("CF-")
        first = ds["temperature_sobol_first"].sel(parameter="left").isel(time=-1)
        assert first.dims == ("y", "x") and first.attrs["units"] == "1"
    plotted = subprocess.run([*melissa, "plot", str(tmp_path / "out")], capture_output=True,
                             text=True, timeout=300, env=env)
    assert plotted.returncode == 0, plotted.stderr
    figures = {Path(line).name for line in plotted.stdout.split()}
    assert "temperature_maps.png" in figures and any("sobol" in f for f in figures), figures


def test_heat_surrogate_with_active_sampling(build: Path, tmp_path: Path) -> None:
    """The heat surrogate's config (config_dl.json) with Breed, shortened: the study ends, the
    later simulations were drawn while it ran (around high losses, or as exploration before
    the first losses came), within the parameters' bounds, and the surrogate is saved."""
    config = json5.loads((HEAT / "config_dl.json").read_text())
    study = config["study_options"]
    study.update(parameter_sweep_size=24, nb_time_steps=10)
    config["dl_config"].update(active_sampling={"method": "breed", "initial": 8},
                               per_server_watermark=20, nb_batches_update=20)
    config["client_config"]["executable_command"] = f"{build / 'heat_c'} --nx 21 --ny 21 " \
                                                    "--steps 10"
    config["output_dir"] = str(tmp_path / "out")
    path = tmp_path / "config.json"
    path.write_text(json5.dumps(config))
    done = subprocess.run([sys.executable, "-m", "melissa", "run", str(path)],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, **MPI_ROOT})
    assert done.returncode == 0, done.stderr
    with open(tmp_path / "out" / "parameters.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 24 and {row["status"] for row in rows} == {"completed"}
    assert {row["origin"] for row in rows[:8]} == {"halton"}
    later = [row["origin"] for row in rows[8:]]
    assert all(o == "exploration" or o.startswith("child of ") for o in later), later
    names = study["parameter_names"]
    values = np.array([[float(row[name]) for name in names] for row in rows])
    assert (values >= study["l_bounds"]).all() and (values <= study["u_bounds"]).all()
    assert (tmp_path / "out" / "model.pt").exists()
