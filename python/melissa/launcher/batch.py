# SPDX-License-Identifier: BSD-3-Clause
"""What the batch schedulers' backends (slurm.py, oar.py) share.

A job is known by the id its scheduler gave it; its state comes from the scheduler, which asks
the batch system about all of the study's jobs in one call, at most every STATE_INTERVAL
seconds: polling every job every few milliseconds would flood the batch system's server.
Simulations started together are submitted as one job array, whose script gives each task its
command, environment and output files.
"""

from __future__ import annotations

import shlex
import subprocess
from abc import abstractmethod
from pathlib import Path

from melissa.launcher.schedulers import Job, JobSpec, JobState, Scheduler

# Between two state queries of the launcher, whatever the number of jobs.
STATE_INTERVAL = 1.0


class BatchError(RuntimeError):
    """A batch system's command failed; the message has its output."""


def run_command(argv: list[str], **kwargs: object) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, **kwargs)  # type: ignore[call-overload]
    if done.returncode != 0:
        raise BatchError(f"{shlex.join(argv)} failed ({done.returncode}): "
                         f"{done.stderr.strip() or done.stdout.strip()}")
    return str(done.stdout)


class BatchScheduler(Scheduler):
    """A scheduler whose jobs are a batch system's: `label` names it in the logs,
    `cancel_command` takes a job id."""

    label: str
    cancel_command: str

    def __init__(self, mpirun_options: list[str] | None = None,
                 options: dict[str, list[str]] | None = None) -> None:
        super().__init__(mpirun_options)
        # Extra arguments of the submission by kind of job ("server", "simulation"):
        # partition or queue, account or project, time limit, constraints...
        self.options = options or {}

    def options_of(self, spec: JobSpec) -> list[str]:
        return self.options.get("server" if spec.name == "server" else "simulation", [])

    @abstractmethod
    def state(self, job_id: str) -> tuple[JobState, int | None]:
        """The job's state and, once it has ended, its exit status."""

    def cancel_job(self, job_id: str) -> None:
        """Failing only where the job has ended meanwhile, which the next state tells."""
        subprocess.run([self.cancel_command, job_id], capture_output=True, timeout=60)


class BatchJob(Job):
    def __init__(self, scheduler: BatchScheduler, spec: JobSpec, job_id: str = "") -> None:
        self.scheduler, self.spec, self.job_id = scheduler, spec, job_id
        self._state = JobState.PENDING
        self._exit_code: int | None = None
        self._open_logs()

    def poll(self) -> JobState:
        if self._state.active:
            self._state, self._exit_code = self.scheduler.state(self.job_id)
        return self._state

    @property
    def exit_code(self) -> int | None:
        return self._exit_code

    @property
    def name(self) -> str:
        return f"{self.scheduler.label} job {self.job_id}"

    def cancel(self, grace: float = 5.0) -> None:
        if not self.poll().active:
            return
        self.scheduler.cancel_job(self.job_id)
        self.wait(grace + STATE_INTERVAL)


def job_script(path: Path, commands: list[str], task_variable: str, first_task: int,
               preamble: str = "") -> Path:
    """Writes the script of a batch job that runs one command, or of a job array whose task
    `first_task + i` (as `task_variable` numbers it) runs commands[i]."""
    if len(commands) == 1:
        body = commands[0]
    else:
        tasks = "\n".join(f"  {first_task + task})\n    {command} ;;"
                          for task, command in enumerate(commands))
        body = f'case "${task_variable}" in\n{tasks}\nesac'
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\n# written by melissa's launcher\n{preamble}{body}\n")
    path.chmod(0o755)
    return path


def task_command(spec: JobSpec, command: str) -> str:
    """A task's line of a job script: the job's environment, then its command (a shell
    command line), its output appended to the job's files."""
    exports = " ".join(f"{name}={shlex.quote(value)}" for name, value in spec.env.items())
    return (f"export {exports}\n    " if exports else "") + \
        f"exec {command} >>{shlex.quote(str(spec.stdout))} 2>>{shlex.quote(str(spec.stderr))}"
