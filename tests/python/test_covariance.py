# SPDX-License-Identifier: BSD-3-Clause
"""sa_config.covariance through `melissa run`: real launcher, 2-rank MPI server, a solver whose
two fields depend on the parameters. The covariance and correlation in results.nc, of two fields
and of a field with a parameter, must equal numpy's over the simulations' fields: in a plain
study over every simulation, in a Sobol study over the A and B runs (a redrawn group's
included); a pair naming neither a field nor a parameter is refused before anything runs."""

from __future__ import annotations

import json
import os
import runpy
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

ROOT_MPI = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}
CELLS, STEPS = 10, 3

# Sends u and v, the first in an order that alternates with the simulation id: the server must
# pair them whichever comes first. Exits 3 for the ids in MELISSA_TEST_CRASH_IDS.
SOLVER = '''
import os
import sys

import numpy as np


def fields(p, step, cells):
    x = np.arange(cells) / cells
    u = p[0] * np.sin(x + step) + p[1] ** 2 + p[2] * x * step
    v = np.cos(p[1] * x) * (step + 1) + p[0] * p[2] - x * p[0] ** 2
    return {"u": u, "v": v}


if __name__ == "__main__":
    sim = int(os.environ["MELISSA_SIMULATION_ID"])
    if str(sim) in os.environ.get("MELISSA_TEST_CRASH_IDS", "").split(","):
        sys.exit(3)
    from melissa import client

    cells, steps = int(sys.argv[1]), int(sys.argv[2])
    parameters = [float(p) for p in sys.argv[3:]]
    order = ["u", "v"] if sim % 2 == 0 else ["v", "u"]
    for name in order:
        client.init(name, cells)
    for step in range(steps):
        values = fields(parameters, step, cells)
        for name in order:
            client.send(name, values[name])
    client.finalize()
'''


def study_config(tmp_path: Path, *, study: dict[str, Any] | None = None,
                 sa: dict[str, Any] | None = None) -> Path:
    solver = tmp_path / "solver.py"
    solver.write_text(SOLVER)
    config = {
        "study_options": {
            "parameter_sweep_size": 8, "nb_parameters": 3, "l_bounds": [0.0, 0.5, -1.0],
            "u_bounds": [1.0, 2.0, 1.0], "sampler": "halton", "field_names": ["u", "v"],
            "nb_time_steps": STEPS, "seed": 11, "simulation_timeout": 60, **(study or {}),
        },
        "sa_config": {"mean": True, "covariance": [["u", "v"], ["u", "x2"]], **(sa or {})},
        "launcher_config": {"job_limit": 3, "num_server_processes": 2,
                            "timeouts": {"transport": 20}, "simulation_retries": 0},
        "client_config": {"executable_command": f"{sys.executable} {solver} {CELLS} {STEPS}"},
        "output_dir": "out",
    }
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config, indent=1))
    return path


def melissa(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "melissa", *args], capture_output=True,
                          text=True, timeout=240, env={**os.environ, **ROOT_MPI, **(env or {})})


def expected(fields: Callable[..., dict[str, np.ndarray]], parameters: np.ndarray,
             ) -> dict[str, np.ndarray]:
    """np.cov and np.corrcoef over the simulations of `parameters`, each (time, cell)."""
    runs = [[fields(p, step, CELLS) for step in range(STEPS)] for p in parameters]
    u = np.array([[run[step]["u"] for step in range(STEPS)] for run in runs])
    v = np.array([[run[step]["v"] for step in range(STEPS)] for run in runs])
    out = {name: np.empty((STEPS, CELLS)) for name in
           ("u_v_covariance", "u_v_correlation", "u_x2_covariance", "u_x2_correlation")}
    for step in range(STEPS):
        for cell in range(CELLS):
            for other, y in (("v", v[:, step, cell]), ("x2", parameters[:, 1])):
                x = u[:, step, cell]
                out[f"u_{other}_covariance"][step, cell] = np.cov(x, y, ddof=1)[0, 1]
                out[f"u_{other}_correlation"][step, cell] = np.corrcoef(x, y)[0, 1]
    return out


def assert_results(tmp_path: Path, counted: Callable[[xr.Dataset], np.ndarray]) -> None:
    """results.nc's covariance variables against numpy's over the simulations `counted`
    picks."""
    fields = runpy.run_path(str(tmp_path / "solver.py"))["fields"]
    with xr.open_dataset(tmp_path / "out" / "results.nc") as ds:
        parameters = ds["parameters"].values[counted(ds)]
        assert (ds["u_count"].values == len(parameters)).all()
        for name, values in expected(fields, parameters).items():
            variable = ds[name]
            assert variable.dims == ("time", "cell"), name
            assert name.split("_")[1] in variable.attrs["long_name"], variable.attrs
            np.testing.assert_allclose(variable.values, values, rtol=1e-10, atol=1e-12,
                                       err_msg=name)
        assert "v_x2_covariance" not in ds and "v_u_covariance" not in ds


def test_covariance_of_fields_and_parameters_equals_numpy(tmp_path: Path) -> None:
    done = melissa("run", str(study_config(tmp_path)))
    assert done.returncode == 0, done.stderr
    assert "8/8 simulations completed" in done.stdout
    assert_results(tmp_path, lambda ds: np.arange(ds.sizes["simulation"]))


def test_sobol_study_counts_the_a_and_b_runs_of_every_group_redrawn_or_not(
        tmp_path: Path) -> None:
    # Simulation 2, C_1 of group 0, fails for good: group 0 is redrawn as simulations 15-19,
    # whose parameters the server must know; group 0's A and B runs count all the same.
    config = study_config(tmp_path, study={"parameter_sweep_size": 3},
                          sa={"sobol_indices": True})
    done = melissa("run", str(config), env={"MELISSA_TEST_CRASH_IDS": "2"})
    assert done.returncode == 1, done.stderr
    assert "group 3 (simulations 15-19) drawn in its place" in done.stderr, done.stderr

    def a_and_b(ds: xr.Dataset) -> np.ndarray:
        sims = np.arange(ds.sizes["simulation"])
        assert len(sims) == 20
        return sims[(sims % 5 < 2) & (ds["simulation_status"].values == 0)]

    assert_results(tmp_path, a_and_b)


def test_a_pair_of_no_field_or_parameter_launches_nothing(tmp_path: Path) -> None:
    done = melissa("run", str(study_config(tmp_path, sa={"covariance": [["u", "w"]]})))
    assert done.returncode == 2
    assert "sa_config.covariance: ['u', 'w'] must name a field of field_names ['u', 'v'], then " \
           "a field or a parameter of ['x1', 'x2', 'x3']" in done.stderr, done.stderr
    assert not (tmp_path / "out").exists()
