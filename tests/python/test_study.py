# SPDX-License-Identifier: BSD-3-Clause
"""Whole studies through `melissa run`: real launcher, real MPI server, real solver processes.

The statistics of a study must equal those of the same simulations run offline, their fields
written to files and reduced with numpy/scipy; Sobol indices of a model with known indices must
land in their confidence intervals; bad configs, missing, crashing, hanging and restarted solvers
must give clear messages and keep every other simulation's results.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.stats
import xarray as xr

from melissa import _core
from melissa.cli import pkgconfig_dir

STUDIES = Path(__file__).resolve().parents[1] / "studies"
SOLVER = STUDIES / "solver.py"
ROOT_MPI = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}


def study_config(tmp_path: Path, *, solver_options: str = "", sa: dict[str, Any] | None = None,
                 study: dict[str, Any] | None = None, launcher: dict[str, Any] | None = None,
                 command: str | None = None) -> Path:
    """A config in tmp_path (the solver's working directory) with the given overrides."""
    config = {
        "study_options": {
            "parameter_sweep_size": 8, "nb_parameters": 3, "l_bounds": [0.0, 0.0, 0.0],
            "u_bounds": [1.0, 2.0, 3.0], "sampler": "halton", "field_names": ["u", "v"],
            "nb_time_steps": 4, "seed": 7, "simulation_timeout": 60, **(study or {}),
        },
        "sa_config": sa or {
            "mean": True, "variance": True, "skewness": True, "kurtosis": True, "min": True,
            "max": True, "threshold_exceedance": [1.0, 2.5], "quantiles": [0.25, 0.5],
        },
        "launcher_config": {"job_limit": 3, "num_server_processes": 2,
                            "timeouts": {"transport": 20}, **(launcher or {})},
        "client_config": {"executable_command": command or
                          f"{sys.executable} {SOLVER} --fields u,v {solver_options}"},
        "output_dir": "out",
    }
    path = tmp_path / "config.json"
    path.write_text("// written by test_study.py\n" + json.dumps(config, indent=1))
    return path


def melissa(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "melissa", *args], capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **ROOT_MPI})


def offline_fields(tmp_path: Path, parameters: np.ndarray,
                   options: str = "") -> dict[str, np.ndarray]:
    """Runs every simulation again without melissa, writing its fields to .npy files, and reads
    them back: {field: (simulation, time, cell)}."""
    out = tmp_path / "offline"
    out.mkdir()
    for sim, values in enumerate(parameters):
        subprocess.run(
            [sys.executable, str(SOLVER), "--fields", "u,v", "--no-melissa", "--write-fields",
             str(out), *options.split(), *map(repr, values.tolist())],
            check=True, timeout=60, env={**os.environ, "MELISSA_SIMULATION_ID": str(sim)})
    steps = len(list(out.glob("u-sim0-step*.npy")))
    return {name: np.array([[np.load(out / f"{name}-sim{sim}-step{step}.npy")
                             for step in range(steps)] for sim in range(len(parameters))])
            for name in ("u", "v")}


def assert_close(got: Any, expected: np.ndarray, what: str) -> None:
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-10, atol=1e-12, err_msg=what)


def test_statistics_equal_offline_reference(tmp_path: Path) -> None:
    done = melissa("run", str(study_config(tmp_path)))
    assert done.returncode == 0, done.stderr
    assert "8/8 simulations completed" in done.stdout
    with xr.open_dataset(tmp_path / "out" / "results.nc") as ds:
        fields = offline_fields(tmp_path, ds["parameters"].values)
        for name, data in fields.items():  # data: (simulation, time, cell)
            assert (ds[f"{name}_count"].values == len(data)).all()
            assert_close(ds[f"{name}_mean"], data.mean(axis=0), f"{name} mean")
            assert_close(ds[f"{name}_variance"], data.var(axis=0, ddof=1), f"{name} variance")
            assert_close(ds[f"{name}_skewness"], scipy.stats.skew(data, axis=0), f"{name} skew")
            assert_close(ds[f"{name}_kurtosis"], scipy.stats.kurtosis(data, axis=0),
                         f"{name} kurtosis")
            assert_close(ds[f"{name}_min"], data.min(axis=0), f"{name} min")
            assert_close(ds[f"{name}_max"], data.max(axis=0), f"{name} max")
            exceed = np.stack([(data > t).sum(axis=0) for t in ds["threshold"].values])
            np.testing.assert_array_equal(ds[f"{name}_threshold_exceedance"].values, exceed)
            # Robbins-Monro quantiles depend on arrival order: checked against the exact
            # empirical quantiles of 8 values only loosely (they lie within the data's range).
            quantiles = ds[f"{name}_quantiles"].values
            assert (quantiles >= data.min(axis=0) - 1e-9).all()
            assert (quantiles <= data.max(axis=0) + 1e-9).all()
        assert (ds["simulation_status"].values == 0).all()
        assert json.loads(ds.attrs["config"])["study_options"]["seed"] == 7


@pytest.fixture(scope="module")
def sobol_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The serial C model of known indices, built against the installed package (pkg-config)."""
    build = tmp_path_factory.mktemp("sobol_model")
    flags = subprocess.run(["pkg-config", "--cflags", "--libs", "melissa"], check=True,
                           capture_output=True, text=True,
                           env={**os.environ, "PKG_CONFIG_PATH": str(pkgconfig_dir())})
    executable = build / "sobol_model"
    subprocess.run(["mpicc", str(STUDIES / "sobol_model.c"), "-o", str(executable),
                    *flags.stdout.split()], check=True, timeout=120)
    return executable


def analytic_indices(cells: int) -> tuple[np.ndarray, np.ndarray]:
    """(first, total), each (parameter, cell), of sobol_model.c's model."""
    c2 = 2.0 * np.arange(cells) / (cells - 1)
    v1, v2, v13 = np.full(cells, 1 / 3), c2**2 / 3, np.full(cells, 1.5**2 / 9)
    v = v1 + v2 + v13
    return np.stack([v1, v2, 0 * v]) / v, np.stack([v1 + v13, v2, v13]) / v


def test_sobol_indices_land_in_their_confidence_intervals(tmp_path: Path,
                                                          sobol_model: Path) -> None:
    cells, groups = 6, 160
    config = study_config(
        tmp_path, command=f"{sobol_model} {cells} 2",
        study={"parameter_sweep_size": groups, "l_bounds": [-1.0] * 3, "u_bounds": [1.0] * 3,
               "field_names": ["y"], "nb_time_steps": 2, "sampler": "sobol"},
        sa={"mean": True, "sobol_indices": True}, launcher={"job_limit": 6})
    done = melissa("run", str(config))
    assert done.returncode == 0, done.stderr
    first, total = analytic_indices(cells)
    with xr.open_dataset(tmp_path / "out" / "results.nc") as ds:
        assert ds.sizes["simulation"] == groups * 5
        # The moments use the A and B runs of each group: the independent draws.
        assert (ds["y_count"].values == 2 * groups).all()
        inside = []
        for name, exact in (("first", first), ("total", total)):
            estimate = ds[f"y_sobol_{name}"].isel(time=-1).values
            lower = ds[f"y_sobol_{name}_lower"].isel(time=-1).values
            upper = ds[f"y_sobol_{name}_upper"].isel(time=-1).values
            assert (lower <= estimate).all() and (estimate <= upper).all()
            inside.append((lower <= exact) & (exact <= upper))
            # A miss of a 95% interval is allowed now and then, never a wild one.
            half_width = (upper - lower) / 2
            assert (np.abs(estimate - exact) < 3 * half_width + 1e-12).all(), name
        inside_all = np.concatenate(inside)
        assert inside_all.mean() >= 0.85, f"{inside_all.mean():.0%} of intervals hold the index"


def test_run_scripts_written_for_melissa_find_its_simulation_id(tmp_path: Path) -> None:
    """Inria Melissa's launcher names the id MELISSA_SIMU_ID; run scripts that read it keep
    working: a simulation whose two ids differ (or lack) exits 9 and fails the study."""
    script = tmp_path / "run.sh"
    script.write_text('#!/bin/sh\n[ -n "$MELISSA_SIMU_ID" ] && '
                      '[ "$MELISSA_SIMU_ID" = "$MELISSA_SIMULATION_ID" ] || exit 9\n'
                      f'exec {sys.executable} {SOLVER} --fields u,v "$@"\n')
    script.chmod(0o755)
    done = melissa("run", str(study_config(tmp_path, command=str(script),
                                           study={"parameter_sweep_size": 3})))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3/3 simulations completed" in done.stdout


def test_unresolvable_server_host_stops_the_study_at_once(tmp_path: Path) -> None:
    """A host name the simulations cannot resolve would leave each of them waiting for the
    server until its timeout: the launcher says so before starting anything."""
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "melissa", "run", str(study_config(tmp_path))],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, **ROOT_MPI,
                               "MELISSA_SERVER_HOST": "no-such-host.invalid"})
    assert done.returncode == 2, done.stdout + done.stderr
    assert "'no-such-host.invalid' does not resolve" in done.stderr, done.stderr
    assert "MELISSA_SERVER_HOST" in done.stderr
    assert time.monotonic() - started < 30
    assert not (tmp_path / "out").exists()


def test_bad_config_launches_nothing(tmp_path: Path) -> None:
    config = study_config(tmp_path, launcher={"jobs_limit": 2})
    done = melissa("run", str(config))
    assert done.returncode == 2
    assert "launcher_config.jobs_limit: unknown key (did you mean 'job_limit'?)" in done.stderr
    assert not (tmp_path / "out").exists()

    bounds = study_config(tmp_path, study={"l_bounds": [0.0, 5.0, 0.0]})
    done = melissa("run", str(bounds))
    assert done.returncode == 2
    assert "l_bounds 5.0 is not below u_bounds 2.0" in done.stderr
    assert not (tmp_path / "out").exists()


def test_resume_without_checkpoint_launches_nothing(tmp_path: Path) -> None:
    done = melissa("run", str(study_config(tmp_path)), "--resume")
    assert done.returncode == 2
    assert "--resume needs a checkpoint of each of the 2 server ranks" in done.stderr
    assert not (tmp_path / "out" / "results.nc").exists()


def test_plot_without_results_says_so(tmp_path: Path) -> None:
    done = melissa("plot", str(tmp_path))
    assert done.returncode == 2
    assert "run the study first" in done.stderr


def test_missing_solver_launches_nothing(tmp_path: Path) -> None:
    done = melissa("run", str(study_config(tmp_path, command="./no-such-solver --x 1")))
    assert done.returncode == 2
    assert "no-such-solver does not exist" in done.stderr
    assert not (tmp_path / "out").exists()


def test_crashing_solver_keeps_the_other_results(tmp_path: Path) -> None:
    config = study_config(tmp_path, solver_options="--crash-ids 2,5",
                          launcher={"simulation_retries": 1})
    done = melissa("run", str(config))
    assert done.returncode == 1
    assert "6/8 simulations completed, 2 failed (2, 5)" in done.stdout
    assert "simulation 2 failed (exit status 3: simulation 2 crashes on purpose) after 2 " \
           "attempts" in done.stderr
    with xr.open_dataset(tmp_path / "out" / "results.nc") as ds:
        status = ds["simulation_status"].values
        assert list(np.flatnonzero(status == 1)) == [2, 5]
        assert (ds["u_count"].values == 6).all()
        fields = offline_fields(tmp_path, ds["parameters"].values)
        kept = [sim for sim in range(8) if sim not in (2, 5)]
        assert_close(ds["u_mean"], fields["u"][kept].mean(axis=0), "mean of the survivors")


def test_hanging_solver_is_killed_after_its_timeout(tmp_path: Path) -> None:
    config = study_config(tmp_path, solver_options="--hang-ids 1",
                          study={"simulation_timeout": 3}, launcher={"simulation_retries": 0})
    start = time.monotonic()
    done = melissa("run", str(config))
    assert time.monotonic() - start < 60
    assert done.returncode == 1
    assert "simulation 1 failed (sent nothing for 3 s" in done.stderr
    assert "7/8 simulations completed, 1 failed (1)" in done.stdout
    with xr.open_dataset(tmp_path / "out" / "results.nc") as ds:
        # Simulation 1's two steps that did arrive are counted; nothing is lost or doubled.
        assert list(ds["u_count"].values) == [8, 8, 7, 7]


def test_restarted_simulation_is_never_counted_twice(tmp_path: Path) -> None:
    config = study_config(tmp_path, solver_options="--crash-once-after 2",
                          launcher={"simulation_retries": 1})
    done = melissa("run", str(config))
    assert done.returncode == 0, done.stderr
    assert "crashes once after step 2" in (tmp_path / "out" / "logs" / "simulations"
                                          / "simulation-0.err").read_text()
    with xr.open_dataset(tmp_path / "out" / "results.nc") as ds:
        assert (ds["u_count"].values == 8).all()
        fields = offline_fields(tmp_path, ds["parameters"].values)
        assert_close(ds["v_variance"], fields["v"].var(axis=0, ddof=1), "variance after restarts")
        counters = (tmp_path / "out" / "logs" / "server-0.log").read_text()
        assert "time step already received" in counters


def test_server_crash_then_resume_from_checkpoint(tmp_path: Path) -> None:
    """The server dies mid-study; `melissa run --resume` takes up its last checkpoint, runs
    only what it lacked, and the results are those of every simulation, none counted twice."""
    config = study_config(tmp_path, solver_options="--step-delay 0.3",
                          sa={"mean": True, "variance": True, "min": True, "max": True,
                              "checkpoint_interval": 0.5}, launcher={"server_restarts": 0})
    launcher = subprocess.Popen([sys.executable, "-m", "melissa", "run", str(config)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env={**os.environ, **ROOT_MPI})
    checkpoints = [tmp_path / "out" / "checkpoints" / f"statistics-{r}.ckpt" for r in (0, 1)]

    def finished_in_checkpoints() -> int:
        try:
            return min(len(_core.checkpoint_summary(p.read_bytes())["finished"])
                       for p in checkpoints)
        except (OSError, ValueError):
            return 0

    deadline = time.monotonic() + 60
    while finished_in_checkpoints() < 3:
        assert time.monotonic() < deadline and launcher.poll() is None, launcher.communicate()
        time.sleep(0.1)
    server = json.loads((tmp_path / "out" / ".melissa" / "server.json").read_text())
    os.kill(server["pids"][0], signal.SIGKILL)
    _, stderr = launcher.communicate(timeout=60)
    assert launcher.returncode == 1
    assert "the server stopped" in stderr and "server_restarts" in stderr

    done = melissa("run", str(config), "--resume")
    assert done.returncode == 0, done.stderr
    assert "8/8 simulations completed" in done.stdout
    log = (tmp_path / "out" / "logs" / "launcher.log").read_text()
    rerun = [line for line in log[log.rindex("study "):].splitlines() if "started (attempt" in line]
    assert len(rerun) < 8, "what the checkpoint held whole did not run again"
    with xr.open_dataset(tmp_path / "out" / "results.nc") as ds:
        assert (ds["u_count"].values == 8).all(), "every simulation once, none twice"
        assert (ds["simulation_status"].values == 0).all()
        fields = offline_fields(tmp_path, ds["parameters"].values)
        assert_close(ds["u_mean"], fields["u"].mean(axis=0), "mean after the resume")
        assert_close(ds["v_variance"], fields["v"].var(axis=0, ddof=1), "variance after resume")
        assert_close(ds["u_max"], fields["u"].max(axis=0), "max after the resume")


def test_schema_plot_and_launcher_alias(tmp_path: Path) -> None:
    schema = json.loads(melissa("schema").stdout)
    assert {"study_options", "sa_config", "launcher_config", "client_config"} <= set(
        schema["properties"])
    config = study_config(tmp_path, study={"parameter_sweep_size": 3})
    done = subprocess.run([Path(sys.executable).parent / "melissa-launcher", "--config_name",
                           str(config)], capture_output=True, text=True, timeout=240,
                          env={**os.environ, **ROOT_MPI})
    assert done.returncode == 0, done.stderr
    plotted = melissa("plot", str(tmp_path / "out"))
    assert plotted.returncode == 0, plotted.stderr
    for png in plotted.stdout.split():
        assert Path(png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert {Path(p).name for p in plotted.stdout.split()} == {"u.png", "v.png"}
    again = melissa("run", str(config))
    assert again.returncode == 2 and "--overwrite" in again.stderr
