# SPDX-License-Identifier: BSD-3-Clause
"""Jobs through OAR (2.5).

From a login node, the server is one batch job and the simulations started together one array
job (`oarsub --array`: one submission, a job id per simulation). A job's script runs its command
on the first of the job's nodes: alone for a single process, through mpirun on all of them (the
job's OAR_NODEFILE, oarsh to reach the other nodes) for several. OAR does not give a job the
environment it was submitted from: the script exports the launcher's, as Slurm's --export=ALL
would. States come from one `oarstat` call for all of the study's unfinished jobs, at most every
STATE_INTERVAL seconds.

Inside an OAR job (the launcher itself run by oarsub: OAR_JOB_ID is set), every job is a
process of the launcher's, mpirun placing it on cores of that job that no other job holds.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import time
from pathlib import Path

from melissa.launcher.batch import (
    STATE_INTERVAL,
    BatchError,
    BatchJob,
    BatchScheduler,
    job_script,
    run_command,
    task_command,
)
from melissa.launcher.schedulers import Job, JobSpec, JobState, ProcessJob

# OAR's job states, as the launcher sees them. Terminated is a completion or a failure by its
# exit status; Error (a job deleted, or one that could not start) a failure.
_STATES = {"Waiting": JobState.PENDING, "Hold": JobState.PENDING,
           "toLaunch": JobState.PENDING, "Launching": JobState.PENDING,
           "toAckReservation": JobState.PENDING,
           "Running": JobState.RUNNING, "Finishing": JobState.RUNNING,
           "Suspended": JobState.RUNNING, "Resuming": JobState.RUNNING,
           "toError": JobState.RUNNING, "Error": JobState.FAILED}
# What OAR sets in a job: the launcher's own values (on a login node, none) must not hide them.
_OWN_VARIABLE = re.compile(r"OAR_\w*|PWD|OLDPWD|SHLVL|_")
_SHELL_NAME = re.compile(r"[A-Za-z_]\w*")
# In a job's script, the job's node file: its path, known in the job only, left to the shell.
_NODEFILE = "$OAR_NODEFILE"


def exit_status(wait_status: int) -> int:
    """OAR reports a job's exit as a wait status: 768 is an exit with 3, 9 a SIGKILL."""
    return 128 + (wait_status & 0x7F) if wait_status & 0x7F else wait_status >> 8


class OarScheduler(BatchScheduler):
    name = "oar"
    label = "OAR"
    cancel_command = "oardel"

    def __init__(self, mpirun_options: list[str] | None = None,
                 options: dict[str, list[str]] | None = None) -> None:
        super().__init__(mpirun_options, options)
        self._listed: dict[str, dict[str, object]] = {}  # job id -> its oarstat entry
        self._queried = 0.0
        self._watched: dict[str, float] = {}  # unfinished job id -> when it was submitted
        # Inside an OAR job, its cores, as its node file lists them (a line each, naming the
        # core's node), and which of them each job started there holds.
        self._cores: list[str] = []
        if "OAR_JOB_ID" in os.environ:
            self._cores = Path(os.environ["OAR_NODEFILE"]).read_text().split()
        self._holding: list[tuple[Job, list[int]]] = []

    def capacity(self, processes: int, reserved: int) -> int | None:
        """Inside an OAR job, what its cores hold; from a login node, None: OAR's pending jobs
        tell when the cluster is full."""
        if not self._cores:
            return None
        return max(1, (len(self._cores) - reserved) // processes)

    def mpirun_through_oarsh(self, spec: JobSpec, hostfile: str) -> list[str]:
        """mpirun on the nodes that `hostfile` names, reaching the other nodes through oarsh."""
        mpirun, *rest = self.mpirun_argv(spec)
        return [mpirun, "--hostfile", hostfile, "--mca", "plm_rsh_agent", "oarsh", *rest]

    def command(self, spec: JobSpec) -> str:
        """The job's command line in its script."""
        if spec.n_processes == 1:
            return shlex.join(spec.argv)
        return " ".join(f'"{word}"' if word == _NODEFILE else shlex.quote(word)
                        for word in self.mpirun_through_oarsh(spec, _NODEFILE))

    def submit(self, spec: JobSpec) -> Job:
        if self._cores:
            return self._on_own_cores(spec)
        return self._oarsub([spec])[0]

    def submit_all(self, specs: list[JobSpec]) -> list[Job]:
        if self._cores or not specs:
            return super().submit_all(specs)
        return self._oarsub(specs)

    def _on_own_cores(self, spec: JobSpec) -> Job:
        """The job on cores of the launcher's OAR job that no running job holds; where too few
        are (a job_limit above what the cores hold), on busy ones too, mpirun oversubscribing
        them."""
        self._holding = [(job, cores) for job, cores in self._holding if job.poll().active]
        busy = {core for _, cores in self._holding for core in cores}
        cores = sorted(range(len(self._cores)), key=lambda core: core in busy)[:spec.n_processes]
        hostfile = spec.stdout.with_suffix(".hosts")
        hostfile.parent.mkdir(parents=True, exist_ok=True)
        hostfile.write_text("".join(f"{self._cores[core]}\n" for core in cores))
        job = ProcessJob(spec, self.mpirun_through_oarsh(spec, str(hostfile)))
        self._holding.append((job, cores))
        return job

    def _oarsub(self, specs: list[JobSpec]) -> list[Job]:
        """One job, or an array job of a task per spec (all of one kind and size). OAR's own
        words about a job go beside its output, in oar-<job id>.log."""
        first = specs[0]
        environment = {name: value for name, value in os.environ.items()
                       if _SHELL_NAME.fullmatch(name) and not _OWN_VARIABLE.fullmatch(name)}
        exports = "".join(f"export {name}={shlex.quote(value)}\n"
                          for name, value in sorted(environment.items()))
        script = job_script(first.stdout.with_suffix(".oarsub"),
                            [task_command(spec, self.command(spec)) for spec in specs],
                            "OAR_ARRAY_INDEX", 1, exports)
        jobs = [BatchJob(self, spec) for spec in specs]
        log = str(first.stdout.parent / "oar-%jobid%.log")
        name = f"melissa-{first.name}" if len(specs) == 1 else "melissa-simulations"
        array = ["--array", str(len(specs))] if len(specs) > 1 else []
        submitted = run_command(
            ["oarsub", f"--name={name}", f"--resource=core={first.n_processes}",
             f"--directory={first.cwd}", f"--stdout={log}", f"--stderr={log}", *array,
             *self.options_of(first), shlex.quote(str(script))])
        # A line OAR_JOB_ID=<id> per job, in the order of the array's tasks.
        ids = re.findall(r"^OAR_JOB_ID=(\d+)$", submitted, re.MULTILINE)
        if len(ids) != len(specs):
            raise BatchError(f"oarsub gave {len(ids)} job ids for {len(specs)} jobs: "
                             f"{submitted.strip()}")
        now = time.monotonic()
        for job, job_id in zip(jobs, ids, strict=True):
            job.job_id = job_id
            self._watched[job_id] = now
        return list[Job](jobs)

    def state(self, job_id: str) -> tuple[JobState, int | None]:
        now = time.monotonic()
        if now - self._queried >= STATE_INTERVAL and self._watched:
            listed = run_command(["oarstat", "--full", "--json",
                                  *(arg for watched in self._watched for arg in ("-j", watched))])
            self._listed = json.loads(listed) if listed.strip() else {}
            self._queried = now
        entry = self._listed.get(job_id)
        if entry is None:
            # Submitted since the last oarstat, or else unknown to OAR.
            return (JobState.PENDING if job_id in self._watched else JobState.FAILED), None
        status = None
        if entry["state"] == "Terminated":
            code = entry.get("exit_code")
            status = exit_status(code) if isinstance(code, int) else None
            state = JobState.COMPLETED if status == 0 else JobState.FAILED
        else:
            state = _STATES.get(str(entry["state"]), JobState.RUNNING)
        if not state.active:
            self._watched.pop(job_id, None)
        return state, status
