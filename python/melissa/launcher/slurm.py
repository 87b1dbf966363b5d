# SPDX-License-Identifier: BSD-3-Clause
"""Jobs through Slurm.

From a login node, the server is one batch job and each simulation another, each running its
command as a job step (`srun`) of its allocation. Inside an allocation (the launcher itself run
by `sbatch` or `salloc`: SLURM_JOB_ID is set), every job is a job step, `srun` sharing the
allocation's nodes. Either way MPI ranks are wired up by PMIx (`scheduler_options` may choose
another `--mpi`). Job states come
from one `squeue` call for all of the study's unfinished jobs, at most every STATE_INTERVAL
seconds, and how the jobs that have left the queue ended from one `sacct` call for them all
(accounting keeps a job's end, which the controller forgets after MinJobAge): polling every job
every few milliseconds would flood the controller. On a cluster without accounting, how a job
ended comes from `scontrol show job`, while the controller remembers it. PENDING is not a
failure; a node failure or a time limit is one, and the launcher retries it as any other.
"""

from __future__ import annotations

import logging
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

log = logging.getLogger("melissa.launcher")

# Slurm's job states, as the launcher sees them; any other (FAILED, CANCELLED, TIMEOUT,
# NODE_FAIL, OUT_OF_MEMORY, PREEMPTED, BOOT_FAIL, DEADLINE...) is a failure.
_STATES = {"PENDING": JobState.PENDING, "CONFIGURING": JobState.PENDING,
           "REQUEUED": JobState.PENDING, "RESIZING": JobState.PENDING,
           "RUNNING": JobState.RUNNING, "COMPLETING": JobState.RUNNING,
           "SUSPENDED": JobState.RUNNING, "COMPLETED": JobState.COMPLETED}
# How long a job that has left the queue may go unlisted as ended by accounting before the
# controller is asked instead. slurmctld sends a job's end to slurmdbd a moment after the job
# leaves the queue, much later when slurmdbd is down (it keeps them meanwhile); the controller
# remembers an ended job for MinJobAge (300 s by default), long enough to tell how it ended.
ACCOUNTING_DELAY = 30.0


def reported_state(state: str, exit_code: str) -> tuple[JobState, int | None]:
    """A job's state as sacct or scontrol word it ("CANCELLED by 0": the first word tells)
    and, once it has ended, its exit status from its ExitCode ("status:signal")."""
    found = _STATES.get(state.split()[0] if state else "", JobState.FAILED)
    if found.active:
        return found, None
    status, signal = (int(part) for part in exit_code.split(":"))
    return found, 128 + signal if signal else status


class SlurmScheduler(BatchScheduler):
    name = "slurm"
    label = "Slurm"
    cancel_command = "scancel"

    def __init__(self, mpirun_options: list[str] | None = None,
                 options: dict[str, list[str]] | None = None) -> None:
        super().__init__(mpirun_options, options)
        self._queried = 0.0
        self._watched: set[str] = set()  # the jobs that have not ended, as far as is known
        self._known: dict[str, tuple[JobState, int | None]] = {}  # job id -> its last state
        self._left: dict[str, float] = {}  # unfinished job id -> when it was seen out of the queue
        self._accounting = True  # until sacct fails: then scontrol, for good

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
        for task, job in enumerate(jobs):
            job.job_id = f"{submitted}_{task}" if array else submitted
            self._watched.add(job.job_id)
        return list[Job](jobs)

    def state(self, job_id: str) -> tuple[JobState, int | None]:
        now = time.monotonic()
        if now - self._queried >= STATE_INTERVAL and self._watched:
            self._query(now)
        # Unknown: submitted since the last query.
        state = self._known.get(job_id, (JobState.PENDING, None))
        if not state[0].active:
            self._known.pop(job_id)
        return state

    def _query(self, now: float) -> None:
        """The states of the study's unfinished jobs: one squeue for them all, then one sacct
        for those that have left the queue."""
        # -r: a job array's tasks one per line, as the launcher knows them.
        listed = run_command(["squeue", "-h", "-r", "-o", "%i %T", "-j", ",".join(self._watched)])
        self._queried = now
        queue = dict(line.split() for line in listed.splitlines() if line.strip())
        for job_id in self._watched:
            if job_id in queue:
                # Not over while queued, whatever the word (COMPLETING, STOPPED, SIGNALING...):
                # how it ends, accounting or the controller tell.
                queued = _STATES.get(queue[job_id], JobState.RUNNING)
                self._known[job_id] = (queued if queued.active else JobState.RUNNING, None)
                self._left.pop(job_id, None)
            else:  # left the queue; until its end is known, as it was when last seen
                self._left.setdefault(job_id, now)
        if self._left and self._accounting:
            self._account(list(self._left))
        # Without accounting, or with one that has not listed the job's end for long.
        for job_id in [job_id for job_id, left in self._left.items()
                       if not self._accounting or now - left >= ACCOUNTING_DELAY]:
            self._record(job_id, self._controller_state(job_id))

    def _account(self, job_ids: list[str]) -> None:
        """Records the end of the jobs that accounting lists as ended. A job that it lists
        still active, or not at all, has ended a moment ago: the next query tells."""
        try:
            listed = run_command(["sacct", "-n", "-P", "-o", "JobID,State,ExitCode",
                                  "-j", ",".join(job_ids)])
        except (BatchError, OSError) as error:
            # No accounting on this cluster ("Slurm accounting storage is disabled"), or none
            # that answers: scontrol tells as well while the controller remembers the jobs,
            # without a failing sacct every second.
            log.info("no job accounting (%s): how jobs ended comes from scontrol, while the "
                     "controller remembers them", error)
            self._accounting = False
            return
        # A line for each job (ARRAY_TASK for an array's task), one for each of its steps
        # (JOB.batch, JOB.0...).
        records = {job_id: (state, exit_code) for job_id, state, exit_code in
                   (line.split("|") for line in listed.splitlines())}
        for job_id in [job_id for job_id in self._left if job_id in records]:
            state, exit_code = records[job_id]
            # The exit status is the batch script's, as scontrol reports it: the job's own
            # record has none (0:0) for a cancelled job, whose script the signal ended (0:15).
            # sacct prints a status over 127 less 128, by design: srun's 143 (a SIGTERM) as 15.
            _, exit_code = records.get(f"{job_id}.batch", records[job_id])
            if not (ended := reported_state(state, exit_code))[0].active:
                self._record(job_id, ended)

    def _controller_state(self, job_id: str) -> tuple[JobState, int | None]:
        try:
            shown = run_command(["scontrol", "show", "job", "-o", job_id])
        except BatchError:  # forgotten already (MinJobAge): how it ended is lost
            return JobState.FAILED, None
        fields = dict(item.split("=", 1) for item in shown.split() if "=" in item)
        return reported_state(fields.get("JobState", ""), fields.get("ExitCode", "0:0"))

    def _record(self, job_id: str, state: tuple[JobState, int | None]) -> None:
        """Records a job's state from accounting or the controller, its last if it has ended."""
        self._known[job_id] = state
        if not state[0].active:
            self._watched.discard(job_id)
            self._left.pop(job_id)
