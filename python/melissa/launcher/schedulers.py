# SPDX-License-Identifier: BSD-3-Clause
"""How the launcher starts jobs: the server and every simulation.

A scheduler turns a JobSpec into a running Job that the launcher polls and may cancel. The
interface is the one batch schedulers need too (submit, poll a state, cancel), so Slurm and OAR
fit behind it: for them, submit queues the job and poll reports it pending until it runs.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path


class JobState(Enum):
    PENDING = "pending"  # accepted by the scheduler, not started (batch schedulers)
    RUNNING = "running"
    COMPLETED = "completed"  # exit status 0
    FAILED = "failed"  # any other exit status, or killed

    @property
    def active(self) -> bool:
        """Not over yet: waiting to start, or running."""
        return self in (JobState.PENDING, JobState.RUNNING)


@dataclass(frozen=True)
class JobSpec:
    name: str
    argv: list[str]
    n_processes: int
    stdout: Path
    stderr: Path
    cwd: Path
    env: dict[str, str] = field(default_factory=dict)  # added to the launcher's environment


class Job(ABC):
    """A job the launcher started: it polls its state, waits for it, cancels it."""

    spec: JobSpec
    _stderr_start = 0  # where this attempt's output begins in its (appended) stderr file

    @abstractmethod
    def poll(self) -> JobState: ...

    @property
    @abstractmethod
    def exit_code(self) -> int | None: ...

    @abstractmethod
    def cancel(self, grace: float = 5.0) -> None: ...

    @property
    @abstractmethod
    def name(self) -> str:
        """How the job is known where it runs, for the logs."""

    def wait(self, timeout: float) -> JobState:
        deadline = time.monotonic() + timeout
        while (state := self.poll()).active and time.monotonic() < deadline:
            time.sleep(0.2)
        return state

    def stderr_tail(self, lines: int = 10) -> str:
        """The end of this attempt's stderr."""
        return _tail(self.spec.stderr, lines, self._stderr_start)

    def _open_logs(self) -> None:
        self.spec.stdout.parent.mkdir(parents=True, exist_ok=True)
        with open(self.spec.stderr, "ab") as err:
            self._stderr_start = err.tell()


class ProcessJob(Job):
    """A job started as a process (a plain command or mpirun) in its own process group."""

    def __init__(self, spec: JobSpec, argv: list[str]) -> None:
        self.spec = spec
        self._open_logs()
        # Appended to: a restarted job keeps the output of its earlier attempts.
        with open(spec.stdout, "ab") as out, open(spec.stderr, "ab") as err:
            self._process = subprocess.Popen(
                argv, cwd=spec.cwd, env={**os.environ, **spec.env}, stdout=out, stderr=err,
                stdin=subprocess.DEVNULL, start_new_session=True)

    @property
    def name(self) -> str:
        return f"process {self._process.pid}"

    def poll(self) -> JobState:
        code = self._process.poll()
        if code is None:
            return JobState.RUNNING
        return JobState.COMPLETED if code == 0 else JobState.FAILED

    @property
    def exit_code(self) -> int | None:
        return self._process.returncode

    def cancel(self, grace: float = 5.0) -> None:
        """SIGTERM to the job (mpirun passes it on to its ranks), then, after `grace`, SIGKILL
        to every process of the job's session."""
        if self._process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._process.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._process.wait(grace)
        # Ranks may outlive mpirun for a moment, even after a clean exit of a failed job.
        kill_session(self._process.pid)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._process.wait(5.0)

    def wait(self, timeout: float) -> JobState:
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._process.wait(timeout)
        return self.poll()


def session_members(session: int) -> list[int]:
    """The live processes of a session (Linux: from /proc)."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # ended meanwhile
            continue
        # After the command name, which may hold spaces and parentheses: state, ppid, pgrp, sid.
        state, _, _, sid = stat.rsplit(")", 1)[1].split()[:4]
        if int(sid) == session and state != "Z":
            members.append(int(entry.name))
    return members


def kill_session(session: int) -> None:
    """SIGKILL to every process of a session. Not a process group: OpenMPI puts each rank in a
    group of its own, so killpg would leave ranks running, orphaned; they keep mpirun's session,
    which the job was started in alone."""
    for _ in range(10):  # again, in case a member forked meanwhile
        members = session_members(session)
        if not members:
            return
        for pid in members:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)


def _tail(path: Path, lines: int, start: int = 0) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(start)
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
        return ProcessJob(spec, argv)

    def submit_all(self, specs: list[JobSpec]) -> list[Job]:
        """Jobs of the same kind, together (a batch scheduler makes one request of them)."""
        return [self.submit(spec) for spec in specs]

    def capacity(self, processes: int, reserved: int) -> int | None:
        """For job_limit "auto": how many jobs of `processes` processes run at once beside the
        server's `reserved` processes; None where the scheduler's pending jobs tell instead.
        Here the server mostly waits for data: the simulations get every core."""
        return max(1, len(os.sched_getaffinity(0)) // processes)

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


def make_scheduler(name: str, mpirun_options: list[str],
                   options: dict[str, list[str]] | None = None) -> Scheduler:
    if name == "slurm":
        # Imported here: slurm.py builds on this module.
        from melissa.launcher.slurm import SlurmScheduler

        return SlurmScheduler(mpirun_options, options)
    if name == "oar":
        from melissa.launcher.oar import OarScheduler

        return OarScheduler(mpirun_options, options)
    return {"local": Scheduler, "openmpi": OpenMpiScheduler}[name](mpirun_options)


def mpi_environment() -> dict[str, str]:
    """What OpenMPI needs to run as root (containers, CI machines): it refuses otherwise."""
    if os.geteuid() == 0:
        return {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}
    return {}
