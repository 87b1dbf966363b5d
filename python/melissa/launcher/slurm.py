# SPDX-License-Identifier: BSD-3-Clause
"""Jobs through Slurm.

From a login node, the server is one batch job and each simulation another, each running its
command as a job step (`srun`) of its allocation. Inside an allocation (the launcher itself run
by `sbatch` or `salloc`: SLURM_JOB_ID is set), every job is a job step, `srun` sharing the
allocation's nodes. Either way MPI ranks are wired up by PMIx (`scheduler_options` may choose
another `--mpi`). Job states come
from one `squeue` call for all of the study's jobs, at most every STATE_INTERVAL seconds, then
from `scontrol show job` once a job has left the queue: polling every job every few milliseconds
would flood the controller. PENDING is not a failure; a node failure or a time limit is one,
and the launcher retries it as any other.
"""

from __future__ import annotations

import os
import re
import shlex
import time

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

# Slurm's job states, as the launcher sees them; any other (FAILED, CANCELLED, TIMEOUT,
# NODE_FAIL, OUT_OF_MEMORY, PREEMPTED, BOOT_FAIL, DEADLINE...) is a failure.
_STATES = {"PENDING": JobState.PENDING, "CONFIGURING": JobState.PENDING,
           "REQUEUED": JobState.PENDING, "RESIZING": JobState.PENDING,
           "RUNNING": JobState.RUNNING, "COMPLETING": JobState.RUNNING,
           "SUSPENDED": JobState.RUNNING, "COMPLETED": JobState.COMPLETED}


class SlurmScheduler(BatchScheduler):
    name = "slurm"
    label = "Slurm"
    cancel_command = "scancel"

    def __init__(self, mpirun_options: list[str] | None = None,
                 options: dict[str, list[str]] | None = None) -> None:
        super().__init__(mpirun_options, options)
        self._queue: dict[str, str] = {}  # job id -> its state in the last squeue
        self._queried = 0.0
        self._watched: dict[str, float] = {}  # unfinished job id -> when it was submitted

    def capacity(self, processes: int, reserved: int) -> int | None:
        """Inside an allocation, what its CPUs hold (each step takes its own, --exact); from a
        login node, None: the queue tells."""
        if "SLURM_JOB_ID" not in os.environ:
            return None
        # By node, as "36(x2),72": 36 CPUs on each of 2 nodes, then 72 on one.
        cpus = sum(int(count) * int(nodes or 1) for count, nodes in re.findall(
            r"(\d+)(?:\(x(\d+)\))?", os.environ.get("SLURM_JOB_CPUS_PER_NODE", "")))
        return max(1, (cpus - reserved) // processes)

    def step_argv(self, spec: JobSpec, options: list[str]) -> list[str]:
        """The job step that runs a job's command. Even a single process goes through srun: an
        MPI program started alone in a batch job (a singleton) spawns a daemon of its own, and
        with many starting at once some fail to ("Unable to start a daemon on the local
        node": 10 of 2000 tiny simulations); under srun it gets its peers from PMIx."""
        return ["srun", f"--job-name=melissa-{spec.name}", f"--ntasks={spec.n_processes}",
                "--exact", "--kill-on-bad-exit=1", "--mpi=pmix", *options, *spec.argv]

    def submit(self, spec: JobSpec) -> Job:
        if "SLURM_JOB_ID" in os.environ:
            return ProcessJob(spec, self.step_argv(spec, self.options_of(spec)))
        return self._sbatch([spec])[0]

    def submit_all(self, specs: list[JobSpec]) -> list[Job]:
        """Simulations started together as one job array: one sbatch call, not one each."""
        if len(specs) < 2 or "SLURM_JOB_ID" in os.environ:
            return super().submit_all(specs)
        return self._sbatch(specs)

    def _sbatch(self, specs: list[JobSpec]) -> list[Job]:
        """One batch job, or a job array of a task per spec (all of one kind and size): its
        script gives each task its command, environment and output files; Slurm's own words
        about a job (a cancellation, a node failure) go beside them."""
        first = specs[0]
        # The options went to sbatch.
        script = job_script(first.stdout.with_suffix(".sbatch"),
                            [task_command(spec, shlex.join(self.step_argv(spec, [])))
                             for spec in specs], "SLURM_ARRAY_TASK_ID", 0)
        array = [f"--array=0-{len(specs) - 1}"] if len(specs) > 1 else []
        jobs = [BatchJob(self, spec) for spec in specs]
        name = f"melissa-{first.name}" if len(specs) == 1 else "melissa-simulations"
        submitted = run_command(
            ["sbatch", "--parsable", f"--job-name={name}", *self.options_of(first), *array,
             f"--ntasks={first.n_processes}", f"--chdir={first.cwd}", "--export=ALL",
             f"--output={first.stdout.parent / ('slurm-%A_%a.log' if array else 'slurm-%j.log')}",
             str(script)]).strip().split(";")[0]
        now = time.monotonic()
        for task, job in enumerate(jobs):
            job.job_id = f"{submitted}_{task}" if array else submitted
            self._watched[job.job_id] = now
        return list[Job](jobs)

    def state(self, job_id: str) -> tuple[JobState, int | None]:
        now = time.monotonic()
        if now - self._queried >= STATE_INTERVAL:
            # -r: a job array's tasks one per line, as the launcher knows them.
            listed = run_command(["squeue", "-h", "-r", "-o", "%i %T", "-j",
                                  ",".join(self._watched)])
            self._queue = dict(line.split() for line in listed.splitlines() if line.strip())
            self._queried = now
        if job_id in self._queue:
            return _STATES.get(self._queue[job_id], JobState.RUNNING), None
        if self._watched.get(job_id, 0.0) > self._queried:
            return JobState.PENDING, None  # submitted since the last squeue
        # Not in the queue: its state from the controller, final once it has left.
        try:
            shown = run_command(["scontrol", "show", "job", "-o", job_id])
        except BatchError:  # forgotten already (MinJobAge): how it ended is lost
            self._watched.pop(job_id, None)
            return JobState.FAILED, None
        fields = dict(item.split("=", 1) for item in shown.split() if "=" in item)
        state = _STATES.get(fields.get("JobState", ""), JobState.FAILED)
        if state.active:
            return state, None
        self._watched.pop(job_id, None)
        status, signal = (int(part) for part in fields.get("ExitCode", "0:0").split(":"))
        return state, 128 + signal if signal else status


