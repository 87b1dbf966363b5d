# SPDX-License-Identifier: BSD-3-Clause
"""Fixtures shared by the tests: the melissa.stats tests', and real processes for the transport
and install tests."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from melissa import stats
from melissa.cli import cmake_dir
from melissa.launcher.schedulers import kill_session
from melissa.protocol import study_token


@pytest.fixture
def rng() -> np.random.Generator:
    """A fixed seed: every statistical bound in these tests was checked against this stream."""
    return np.random.default_rng(20240611)


@pytest.fixture
def restore_num_threads() -> Iterator[None]:
    """set_num_threads is process-wide: put back what the test found, whatever it did."""
    original = stats.get_num_threads()
    yield
    stats.set_num_threads(original)


@pytest.fixture
def short_switch_interval() -> Iterator[None]:
    """A 0.1 ms GIL switch interval (default 5 ms) shrinks the time another Python thread can run
    between the main thread's timestamp and its entry into a kernel, so the GIL tests can tell
    "ran during the kernel" from "ran just before it" on short kernels."""
    original = sys.getswitchinterval()
    sys.setswitchinterval(1e-4)
    yield
    sys.setswitchinterval(original)


# ---------------------------------------------------------------------------------------------
# Real processes: the test solvers of tests/programs, built against the installed package, and
# servers and clients started with mpirun.

PROGRAMS = Path(__file__).resolve().parents[1] / "programs"

# mpirun refuses root without these; on a 2-core machine every job oversubscribes, and binding
# would pin the ranks of concurrent jobs to the same cores.
MPI_ENV = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}
MPIRUN = ["mpirun", "--oversubscribe", "--bind-to", "none"]


def mpirun(n_ranks: int, argv: list[str]) -> list[str]:
    """argv under mpirun with n_ranks ranks; n_ranks 0 runs it as a plain process, without MPI."""
    return [*MPIRUN, "-np", str(n_ranks), *argv] if n_ranks > 0 else argv


def venv_tool(name: str) -> str:
    """The venv's cmake, ninja...: the ones the package was built with."""
    beside_python = Path(sys.executable).parent / name
    found = str(beside_python) if beside_python.exists() else shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed; `make install` installs it")
    return found


@pytest.fixture(scope="session")
def test_programs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[str]]:
    """The command of each test solver, by name. The C and Fortran ones are built with CMake's
    find_package(Melissa) from the installed package: this build is the CMake install test of
    the transport, so a failure here says what a user's build would hit."""
    build = tmp_path_factory.mktemp("programs")
    cmake = venv_tool("cmake")
    for command in (
        [cmake, "-S", str(PROGRAMS), "-B", str(build), "-G", "Ninja",
         f"-DCMAKE_MAKE_PROGRAM={venv_tool('ninja')}", f"-DMelissa_DIR={cmake_dir()}"],
        [cmake, "--build", str(build)],
    ):
        done = subprocess.run(command, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}"
    programs = {name: [str(build / f"solver_{name}")]
                for name in ("c", "c_serial", "fortran_mpi", "fortran_f08")}
    programs["python"] = [sys.executable, str(PROGRAMS / "solver.py")]
    return programs


@dataclass
class Finished:
    """A process that ended: its status, its output (stdout and stderr together), how long."""

    argv: list[str]
    returncode: int
    output: str
    seconds: float

    def __str__(self) -> str:
        return (f"`{' '.join(self.argv)}` exited with {self.returncode} after "
                f"{self.seconds:.1f} s; its output:\n{self.output}")


class Processes:
    """Starts processes, each in a session of its own, so that everything mpirun starts can be
    found and killed; the `processes` fixture kills every session at teardown, whatever the test
    did, and every wait has a timeout: no test can hang or leave processes behind."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.transport = "zmq"  # what carries the data of the servers start_server starts
        self._started: list[tuple[subprocess.Popen[bytes], list[str], Path, float]] = []
        self._temporary_dirs: list[Path] = []

    def start(self, argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """Starts argv with the MPI settings and `env` over this environment, less any
        MELISSA_* variable of the caller's shell (a test sets every one it wants)."""
        log = self.log_dir / f"process-{len(self._started)}.log"
        base = {k: v for k, v in os.environ.items() if not k.startswith("MELISSA_")}
        # Output to a file, not a pipe: a chatty process can never block on a full pipe.
        with log.open("wb") as out:
            process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                       env={**base, **MPI_ENV, **(env or {})},
                                       start_new_session=True)
        self._started.append((process, argv, log, time.monotonic()))
        return process

    def wait(self, process: subprocess.Popen[bytes], timeout: float) -> Finished:
        """Waits for a process; one still running after `timeout` s is killed, and fails the
        test."""
        _, argv, log, started = next(s for s in self._started if s[0] is process)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill(process)
            pytest.fail(f"`{' '.join(argv)}` still ran after {timeout} s; killed. Its output:\n"
                        f"{log.read_text(errors='replace')}")
        return Finished(argv, process.returncode, log.read_text(errors="replace"),
                        time.monotonic() - started)

    def run(self, argv: list[str], env: dict[str, str] | None = None,
            timeout: float = 60) -> Finished:
        return self.wait(self.start(argv, env), timeout)

    def kill(self, process: subprocess.Popen[bytes]) -> None:
        """SIGKILL to mpirun and its ranks at once (start() gave each its own session)."""
        kill_session(process.pid)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(10)

    def close(self) -> None:
        for process, *_ in self._started:
            self.kill(process)
        for directory in self._temporary_dirs:
            shutil.rmtree(directory, ignore_errors=True)

    def start_server(self, ranks: int, fields: Sequence[str], simulations: Sequence[int], *,
                     routing: str = "cells", deadline: float = 30,
                     field_sizes: Sequence[int] | None = None,
                     nb_time_steps: int = 0) -> CollectServer:
        """Starts tests/programs/collect_server.py on `ranks` ranks, with a fresh study token;
        returns once it has published its address. It stops by itself when every simulation
        listed is finished on every rank, or after `deadline` s. field_sizes and nb_time_steps:
        what the study declares (None, 0: nothing)."""
        run_dir = Path(tempfile.mkdtemp(prefix="server-", dir=self.log_dir))
        # Unix socket paths are limited to 108 bytes, too few for pytest's deep tmp_path.
        ipc_dir = Path(tempfile.mkdtemp(prefix="melissa-"))
        self._temporary_dirs.append(ipc_dir)
        token = study_token()
        address_file = run_dir / "address.json"
        argv = mpirun(ranks, [sys.executable, str(PROGRAMS / "collect_server.py"),
                              "--fields", ",".join(fields), "--token", f"{token:016x}",
                              "--routing", routing, "--address-file", str(address_file),
                              "--report-dir", str(run_dir), "--deadline", str(deadline),
                              "--nb-time-steps", str(nb_time_steps),
                              "--transport", self.transport,
                              *(["--field-sizes", ",".join(map(str, field_sizes))]
                                if field_sizes else []),
                              "--simulations", *map(str, simulations)])
        process = self.start(argv, {"MELISSA_IPC_DIR": str(ipc_dir)})
        give_up = time.monotonic() + 60
        while not address_file.exists():
            if process.poll() is not None or time.monotonic() > give_up:
                self.kill(process)
                _, _, log, _ = self._started[-1]
                pytest.fail(f"the server published no address; its output:\n{log.read_text()}")
            time.sleep(0.05)
        published = json.loads(address_file.read_text())
        return CollectServer(self, process, published["address"], address_file, run_dir, ranks,
                             token, deadline)


@dataclass
class CollectServer:
    """A running collect_server.py: what its clients need, and its ranks' reports at the end."""

    processes: Processes
    process: subprocess.Popen[bytes]
    address: str
    address_file: Path
    run_dir: Path
    ranks: int
    token: int
    deadline: float

    def client_env(self, simulation: int, *, token: int | None = None,
                   timeout: float = 10) -> dict[str, str]:
        """The environment a launcher gives a simulation of this server's study."""
        return {
            "MELISSA_SERVER_ADDRESS": self.address,
            "MELISSA_SIMULATION_ID": str(simulation),
            "MELISSA_STUDY_TOKEN": f"{self.token if token is None else token:016x}",
            "MELISSA_TIMEOUT": str(timeout),
        }

    def reports(self) -> list[dict[str, Any]]:
        """Waits for the server to stop (its own deadline, plus mpirun's start and end) and
        returns each rank's report."""
        finished = self.processes.wait(self.process, self.deadline + 30)
        assert finished.returncode == 0, f"the server failed: {finished}"
        reports = []
        for rank in range(self.ranks):
            path = self.run_dir / f"report.{rank}.json"
            assert path.exists(), f"server rank {rank} wrote no report: {finished}"
            reports.append(json.loads(path.read_text()))
        return reports


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    """Starts processes for a test and kills whatever is left of them when it ends."""
    started = Processes(tmp_path)
    try:
        yield started
    finally:
        started.close()
