# SPDX-License-Identifier: BSD-3-Clause
"""Solvers written for Inria's Melissa run unchanged: the legacy heat solvers of
examples/heat/legacy (C with <melissa/api.h>, Fortran with mpif.h and include "melissa_api.f90",
Python with `from melissa_api import ...`), which split MPI_COMM_WORLD by MPI_APPNUM, read their
parameters from the command line and ignore what melissa's calls return, build with nothing but
pkg-config's flags, run a Sobol study, and give the results of heat_c, the same solver written
against melissa's own API, to the last bit. A legacy call that fails prints the error and ends
the program with a non-zero status: the whole MPI job, even when the other rank waits in a
collective call, and no process is left behind."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from conftest import MPIRUN, Processes, venv_tool

from melissa.cli import pkgconfig_dir
from melissa.launcher.schedulers import session_members

ROOT = Path(__file__).resolve().parents[2]
HEAT = ROOT / "examples" / "heat"
LEGACY = HEAT / "legacy"
SERIAL = ROOT / "tests" / "legacy" / "serial_legacy.c"
NX, NY, STEPS = 12, 10, 20
GROUPS = 4  # pick-freeze groups of 5 + 2 simulations
NO_SERVER = "melissa: MELISSA_SERVER_ADDRESS is not set"


def build(command: list[str], cwd: Path | None = None) -> None:
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=cwd)
    assert done.returncode == 0, f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}"


def pkg_config() -> list[str]:
    done = subprocess.run([venv_tool("pkg-config"), "--cflags", "--libs", "melissa"],
                          capture_output=True, text=True, timeout=60, check=True,
                          env={**os.environ, "PKG_CONFIG_PATH": str(pkgconfig_dir())})
    return done.stdout.split()


@pytest.fixture(scope="module")
def legacy_solvers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[str]]:
    """Each legacy solver's command, less its arguments. Built as a user builds a solver
    written for Melissa: the MPI compiler wrapper, the solver's own files (here the shared
    numerics) and pkg-config's flags, nothing else."""
    out = tmp_path_factory.mktemp("legacy")
    flags = pkg_config()
    build(["mpicc", str(LEGACY / "heat_legacy.c"), str(HEAT / "heat_numerics.c"),
           "-o", str(out / "heat_legacy_c"), *flags])
    # In the build directory: the module heat_numerics.mod goes to the working directory.
    build(["mpif90", str(HEAT / "heat_numerics.f90"), str(LEGACY / "heat_legacy.f90"),
           "-o", str(out / "heat_legacy_fortran"), *flags], cwd=out)
    return {"c": [str(out / "heat_legacy_c")], "fortran": [str(out / "heat_legacy_fortran")],
            "python": [sys.executable, str(LEGACY / "heat_legacy.py")]}


def run_study(processes: Processes, tmp_path: Path, command: list[str]) -> Path:
    """A Sobol study of the heat solver `command` (its parameters appended by the launcher),
    each simulation on 2 MPI ranks, so that mpirun starts it and sets MPI_APPNUM; returns its
    results.nc."""
    config = {
        "study_options": {
            "parameter_sweep_size": GROUPS, "nb_parameters": 5,
            "l_bounds": [0, 100, 100, 100, 100], "u_bounds": [100, 500, 500, 500, 500],
            "sampler": "halton", "seed": 2024, "field_names": ["temperature"],
            "nb_time_steps": STEPS, "simulation_timeout": 60,
        },
        "sa_config": {
            "mean": True, "variance": True, "skewness": True, "kurtosis": True, "min": True,
            "max": True, "threshold_exceedance": [200, 300], "quantiles": [0.1, 0.5, 0.9],
            "sobol_indices": True,
        },
        # One simulation at a time: the server updates its statistics in the order the fields
        # arrive, and the moments' rounding and the Robbins-Monro quantiles depend on that order.
        # In a fixed order, equal fields give equal results, to the bit.
        "launcher_config": {"scheduler": "local", "job_limit": 1, "num_server_processes": 2,
                            "num_client_processes": 2},
        "client_config": {"executable_command": shlex.join(command)},
        "output_dir": "out",
    }
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config, indent=1))
    done = processes.run([sys.executable, "-m", "melissa", "run", str(path)], timeout=180)
    simulations = GROUPS * 7
    assert done.returncode == 0, str(done)
    assert f"{simulations}/{simulations} simulations completed" in done.output, str(done)
    return tmp_path / "out" / "results.nc"


@pytest.fixture(scope="module")
def new_api_results(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The study's results with heat_c, the solver written against melissa's own API, built by
    examples/heat/build.sh."""
    out = tmp_path_factory.mktemp("heat")
    build([str(HEAT / "build.sh"), str(out / "build")])
    processes = Processes(out)
    try:
        yield run_study(processes, out, [str(out / "build" / "heat_c"), "--nx", str(NX),
                                         "--ny", str(NY), "--steps", str(STEPS)])
    finally:
        processes.close()


@pytest.mark.parametrize("language", ["c", "fortran", "python"])
def test_legacy_solver_study_equals_new_api_study(
        tmp_path: Path, processes: Processes, legacy_solvers: dict[str, list[str]],
        new_api_results: Path, language: str) -> None:
    command = [*legacy_solvers[language], str(NX), str(NY), str(STEPS)]
    results = run_study(processes, tmp_path, command)
    with xr.open_dataset(new_api_results) as expected, xr.open_dataset(results) as got:
        assert (got["simulation_status"].values == 0).all()
        assert sorted(got.variables) == sorted(expected.variables)
        for name in expected.variables:
            # Equal arrays, NaN where NaN (a Sobol index of a cell that does not vary).
            np.testing.assert_array_equal(got[name].values, expected[name].values,
                                          err_msg=f"{language}: {name}", strict=True)


def assert_nothing_left(session: int) -> None:
    """No process of the job's session is left: ranks may outlive mpirun for a moment."""
    deadline = time.monotonic() + 10
    while session_members(session) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not session_members(session), "processes of the job are left running"


# How the solver starts: alone (no mpirun: no MPI_APPNUM), on 2 ranks of which neither finds a
# study, or on 2 ranks of which only rank 1 finds one (an address nothing listens on, a timeout
# far beyond the test's): rank 1 then waits in melissa_init's collective calls for rank 0, which
# fails. mpirun is told not to end a job of which a rank exits non-zero, as launchers such as
# srun do not by default: only the failing call's MPI_Abort can end rank 1.
LAUNCHES = {
    "alone": [],
    "2 ranks": [*MPIRUN, "-np", "2"],
    "rank 0 fails": [*MPIRUN, "-np", "2", "sh", "-c",
                     'if [ "$OMPI_COMM_WORLD_RANK" = 1 ]; then export '
                     "MELISSA_SERVER_ADDRESS=tcp://127.0.0.1:9 MELISSA_SIMULATION_ID=0 "
                     'MELISSA_STUDY_TOKEN=1 MELISSA_TIMEOUT=600; fi; exec "$@"', "sh"],
}


@pytest.mark.parametrize("launch", list(LAUNCHES))
@pytest.mark.parametrize("language", ["c", "fortran", "python"])
def test_failed_legacy_call_ends_the_job(processes: Processes,
                                         legacy_solvers: dict[str, list[str]], language: str,
                                         launch: str) -> None:
    argv = [*LAUNCHES[launch], *legacy_solvers[language], str(NX), str(NY), str(STEPS),
            "50", "100", "200", "300", "400"]
    process = processes.start(argv, {"OMPI_MCA_orte_abort_on_non_zero_status": "0"})
    finished = processes.wait(process, 30)
    assert finished.returncode != 0, str(finished)
    assert NO_SERVER in finished.output, str(finished)
    assert_nothing_left(process.pid)


def test_failed_legacy_call_without_mpi_exits(tmp_path: Path, processes: Processes) -> None:
    executable = tmp_path / "serial_legacy"
    build([venv_tool("cc"), str(SERIAL), "-o", str(executable), *pkg_config()])
    finished = processes.run([str(executable), "3"], timeout=30)
    assert finished.returncode == 1, str(finished)
    assert NO_SERVER in finished.output, str(finished)


@pytest.mark.parametrize("header", ["<melissa/api.h>", "<melissa_api.h>",
                                    "<melissa/api_no_mpi.h>", "<melissa_api_no_mpi.h>"])
def test_legacy_headers_declare_melissas_signatures(tmp_path: Path, header: str) -> None:
    compiler = "mpicc" if "no_mpi" not in header else venv_tool("cc")
    build([compiler, "-Wall", "-Werror", f"-DLEGACY_HEADER={header}",
           str(ROOT / "tests" / "legacy" / "signatures.c"), "-o", str(tmp_path / "signatures"),
           *pkg_config()])


@pytest.mark.parametrize(("argument", "name"), [("size", "local_vect_size"), ("comm", "comm")])
def test_legacy_init_f_with_a_null_argument_exits(tmp_path: Path, processes: Processes,
                                                  argument: str, name: str) -> None:
    executable = tmp_path / "null_argument"
    build(["mpicc", str(ROOT / "tests" / "legacy" / "null_argument.c"), "-o", str(executable),
           *pkg_config()])
    finished = processes.run([str(executable), argument], timeout=30)
    assert finished.returncode != 0, str(finished)
    assert f"melissa: melissa_init_f: {name} is NULL" in finished.output, str(finished)
