# SPDX-License-Identifier: BSD-3-Clause
"""How the launcher starts jobs: the server and every simulation.

A scheduler turns a JobSpec into a running Job that the launcher polls and may cancel. The
interface is the one batch schedulers need too (submit, poll a state, cancel), so Slurm and OAR
fit behind it: for them, submit queues the job and poll reports it pending until it runs.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path


class JobState(Enum):
    PENDING = "pending"  # accepted by the scheduler, not started (batch schedulers)
    RUNNING = "running"
    COMPLETED = "completed"  # exit status 0
    FAILED = "failed"  # any other exit status, or killed


@dataclass(frozen=True)
class JobSpec:
    name: str
    argv: list[str]
    n_processes: int
    stdout: Path
    stderr: Path
    cwd: Path
    env: dict[str, str] = field(default_factory=dict)  # added to the launcher's environment


class Job:
    """A job started as a process (a plain command or mpirun) in its own process group."""

    def __init__(self, spec: JobSpec, argv: list[str]) -> None:
        self.spec = spec
        spec.stdout.parent.mkdir(parents=True, exist_ok=True)
        # Appended to: a restarted job keeps the output of its earlier attempts.
        with open(spec.stdout, "ab") as out, open(spec.stderr, "ab") as err:
            self._process = subprocess.Popen(
                argv, cwd=spec.cwd, env={**os.environ, **spec.env}, stdout=out, stderr=err,
                stdin=subprocess.DEVNULL, start_new_session=True)

    @property
    def pid(self) -> int:
        return self._process.pid

    def poll(self) -> JobState:
        code = self._process.poll()
        if code is None:
            return JobState.RUNNING
        return JobState.COMPLETED if code == 0 else JobState.FAILED

    @property
    def exit_code(self) -> int | None:
        return self._process.returncode

    def cancel(self, grace: float = 5.0) -> None:
        """SIGTERM to the whole process group (mpirun and its ranks), SIGKILL after `grace`."""
        if self._process.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(self._process.pid, sig)
            except ProcessLookupError:
                return
            try:
                self._process.wait(wait)
                return
            except subprocess.TimeoutExpired:
                continue

    def wait(self, timeout: float) -> JobState:
        try:
            self._process.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
        return self.poll()

    def stderr_tail(self, lines: int = 10) -> str:
        return _tail(self.spec.stderr, lines)


def _tail(path: Path, lines: int) -> str:
    try:
        with open(path, "rb") as f:
            return b"".join(f.readlines()[-lines:]).decode(errors="replace")
    except OSError:
        return ""


class Scheduler:
    """Starts jobs on this machine: a job of one process as a plain command, a job of several
    through mpirun."""

    name = "local"

    def __init__(self, mpirun_options: list[str] | None = None) -> None:
        self.mpirun_options = list(mpirun_options or [])

    def needs_mpirun(self, spec: JobSpec) -> bool:
        return spec.n_processes > 1

    def submit(self, spec: JobSpec) -> Job:
        argv = self.mpirun_argv(spec) if self.needs_mpirun(spec) else spec.argv
        return Job(spec, argv)

    def mpirun_argv(self, spec: JobSpec) -> list[str]:
        mpirun = shutil.which("mpirun") or shutil.which("mpiexec")
        if mpirun is None:
            raise FileNotFoundError("mpirun is not on PATH: install MPI (make install does) "
                                    "or load your site's MPI module")
        forwarded = [arg for name in sorted(spec.env) for arg in ("-x", name)]
        return [mpirun, "--oversubscribe", "-np", str(spec.n_processes), *forwarded,
                *self.mpirun_options, *spec.argv]


class OpenMpiScheduler(Scheduler):
    """Every job through mpirun, with the config's mpirun_options (a hostfile, say)."""

    name = "openmpi"

    def needs_mpirun(self, spec: JobSpec) -> bool:
        return True


def make_scheduler(name: str, mpirun_options: list[str]) -> Scheduler:
    return {"local": Scheduler, "openmpi": OpenMpiScheduler}[name](mpirun_options)


def mpi_environment() -> dict[str, str]:
    """What OpenMPI needs to run as root (containers, CI machines): it refuses otherwise."""
    if os.geteuid() == 0:
        return {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}
    return {}
