# SPDX-License-Identifier: BSD-3-Clause
"""Running a study: draw the parameters, start the server, run every simulation within the job
limit, watch them all, and tell the server when to write its results.

No single fault loses the study: a simulation is complete only once the server holds every time
step of every field of it (otherwise it is retried, and a Sobol group that loses a member for
good is redrawn whole); a server that dies or falls silent is restarted from its last
checkpoint; a launcher that dies leaves a server that stops by itself after a final checkpoint,
and the study's lock keeps a second launcher out while the first one runs.
"""

from __future__ import annotations

import contextlib
import csv
import logging
import os
import re
import shlex
import shutil
import socket
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from melissa import convergence
from melissa.config import ConfigError, load_config
from melissa.launcher.preflight import check_server_class, check_training_modules, preflight
from melissa.launcher.progress import Progress
from melissa.launcher.schedulers import Job, JobSpec, JobState, make_scheduler, mpi_environment
from melissa.launcher.training_figures import final_losses, live_losses
from melissa.protocol import (
    EXIT_RESULTS_UNWRITABLE,
    DrawnParameters,
    LauncherHeartbeat,
    ProtocolError,
    RankProgress,
    ServerAnnouncement,
    SimulationLosses,
    StopRequest,
    StudyDescription,
    study_token,
)
from melissa.sampling import ActiveSampler, draw_replacement_group, make_sampler
from melissa.study_files import StudyFiles, read_json, write_json

log = logging.getLogger("melissa.launcher")

# Between two looks at the jobs: a job slot stays idle up to this long after a simulation ends,
# which with simulations of a fraction of a second cost a tenth of the study at 0.1 s.
POLL_INTERVAL = 0.02
# Between two reads of the servers' progress files.
PROGRESS_INTERVAL = 0.5
# Between two beats of the launcher's heartbeat file.
HEARTBEAT_INTERVAL = 1.0
# A simulation that exited with status 0 is complete once the server confirms it holds all of
# its data: its flush at finalize makes that a matter of a progress file or two. Past this long
# without the server receiving more of it, it failed (it never called finalize, say).
CONFIRMATION_TIMEOUT = 10.0
# When this many simulations fail for good (retries included) the same way before any
# completes, the solver cannot run: the study stops instead of trying every simulation.
FAIL_FAST_FAILURES = 3
# With job_limit "auto" and a batch scheduler, the simulations kept waiting in its queue: this
# many, or a tenth of those running if more. A job that starts the moment the cluster has room
# is always there, and pending jobs are the sign that it has none: no more are submitted.
AUTO_PENDING = 4


class StudyError(RuntimeError):
    """The study cannot go on (its server failed for good, say); the message says why."""


class ServerLost(RuntimeError):
    """The server died or fell silent: it is restarted from its last checkpoint."""


class FailFast(RuntimeError):
    """Every first attempt failed the same way: the study is abandoned, writing nothing."""


@dataclass
class Outcome:
    completed: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    not_run: list[int] = field(default_factory=list)
    # C runs of Sobol groups replaced by redrawn ones: their data is in no statistic.
    dropped: list[int] = field(default_factory=list)
    reasons: dict[int, str] = field(default_factory=dict)  # why each failed one failed
    redrawn_groups: int = 0
    server_restarts: int = 0
    # Sobol studies: the groups behind the indices, why no more ran, their intervals' widths.
    sobol: convergence.Summary | None = None
    results: Path | None = None
    seconds: float = 0.0
    # A training study's last losses, {"validation": .., "training": ..}, from metrics.jsonl.
    losses: dict[str, float] = field(default_factory=dict)


@dataclass
class _Running:
    job: Job
    started: float
    attempt: int
    last_data: float  # when the server last saw data of it (start time until then)
    received: int = 0
    exited: float | None = None  # exited with status 0: waiting for the server's confirmation


class LauncherPresence:
    """OUTPUT_DIR/.melissa/launcher.json: the lock that keeps a second launcher of the study
    out (its pid and host tell a live one from a stale one), and the heartbeat by which the
    study's server knows that the launcher still runs."""

    def __init__(self, files: StudyFiles, silence: float) -> None:
        self.files, self.silence = files, silence
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def acquire(self) -> None:
        for _ in range(2):
            beat = LauncherHeartbeat.now()
            beat.write(self.files.private / f"launcher-{beat.pid}.json")
            try:
                # Atomic: of two launchers starting at once, one links first.
                os.link(self.files.private / f"launcher-{beat.pid}.json", self.files.launcher)
                break
            except FileExistsError:
                self.refuse_if_running()
                log.warning("removing the stale lock %s of a launcher that is gone",
                            self.files.launcher)
                self.files.launcher.unlink(missing_ok=True)
            finally:
                (self.files.private / f"launcher-{beat.pid}.json").unlink(missing_ok=True)
        else:
            raise ConfigError(f"could not take the lock {self.files.launcher}")
        self.refuse_if_server_runs()
        self._thread = threading.Thread(target=self._beat, name="heartbeat", daemon=True)
        self._thread.start()

    def refuse_if_running(self) -> None:
        try:
            other = LauncherHeartbeat.read(self.files.launcher)
        except ProtocolError:
            return  # another melissa's: stale or not, it cannot be read as a lock
        if other is not None and other.alive(self.silence):
            age = time.time() - other.time
            raise ConfigError(
                f"{self.files.output_dir} belongs to a study running now (launcher pid "
                f"{other.pid} on {other.host}, alive {age:.0f} s ago): wait for it to end or "
                "stop it, or choose another output_dir")

    def refuse_if_server_runs(self) -> None:
        try:
            server = ServerAnnouncement.read(self.files.server)
        except ProtocolError:
            return
        alive = server.alive_ranks() if server is not None else []
        if server is not None and alive:
            self.release()
            pids = ", ".join(f"rank {rank}: pid {server.pids[rank]}" for rank in alive)
            raise ConfigError(
                f"a server of the study in {self.files.output_dir} still runs ({pids}); it stops "
                f"by itself, after a final checkpoint, within {self.silence:g} s "
                "(launcher_config.timeouts.heartbeat) of its launcher's end: run again then")

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_INTERVAL):
            LauncherHeartbeat.now().write(self.files.launcher)

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.files.launcher.unlink(missing_ok=True)


class StudyRun:
    def __init__(self, config_path: str | Path, *, overwrite: bool = False, resume: bool = False,
                 progress: Progress | None = None) -> None:
        self.config_path = Path(config_path).resolve()
        self.config, output_dir = load_config(self.config_path)
        self.raw_config: dict[str, Any] = self.config.model_dump(mode="json")
        checked = preflight(self.config, self.config_path.parent)
        self.solver = checked.solver
        self.files = StudyFiles(output_dir)
        self.training = self.config.dl_config is not None
        if self.training:
            check_training_modules()
            check_server_class(self.config, self.config_path.parent)
        self.product = self.files.model if self.training else self.files.results
        self.resume = resume
        if not resume and self.product.exists() and not overwrite:
            raise ConfigError(f"{self.product} exists: another study's results; choose "
                              "another output_dir or pass --overwrite")
        launcher = self.config.launcher_config
        self.presence = LauncherPresence(self.files, launcher.timeouts.heartbeat)
        self.scheduler = make_scheduler(launcher.scheduler, launcher.mpirun_options,
                                        {str(kind): options for kind, options
                                         in launcher.scheduler_options.items()})
        # With "auto": what the scheduler runs at once, and the server's memory holds; the
        # memory's bound alone (most_at_once) where the scheduler's queue tells when it is full.
        self.most_at_once = checked.estimate.at_once
        self.job_limit: int | None = self.most_at_once
        if launcher.job_limit == "auto":
            capacity = self.scheduler.capacity(launcher.num_client_processes,
                                               launcher.num_server_processes)
            self.job_limit = None if capacity is None else min(capacity, self.most_at_once)
        self.bind_address = self.server_bind_address()
        self.token = study_token()
        self.progress = progress or Progress(self.config.n_simulations, interactive=False)
        self.sampler = make_sampler(self.config, self.config_path.parent)
        self.active = isinstance(self.sampler, ActiveSampler)
        self.parameters = self.sampler.draw(self.config.initial_simulations)
        self.group_size = self.config.study_options.nb_parameters + 2 if self.config.sobol else 1
        self.outcome = Outcome()
        self.server: Job | None = None
        self.server_started = 0.0
        self.done_before: set[int] = set()  # complete in the checkpoint the server resumed
        self.completed: set[int] = set()
        self.failed: dict[int, str] = {}
        self.dropped: set[int] = set()  # C runs of dropped Sobol groups, except failed ones
        self.dropped_groups: set[int] = set()
        self.queue: deque[tuple[int, int]] = deque()  # (simulation, attempt)
        self.running: dict[int, _Running] = {}
        self.first_failures: list[str] = []  # signatures of failures before any completion
        self.last_tail = ""
        self.ranks_progress: list[RankProgress | None] = []
        sa = self.config.sa_config
        self.convergence = (convergence.Convergence(sa.sobol_ci_target, sa.sobol_ci_quantile)
                            if sa is not None and self.config.sobol else None)

    def network_environment(self) -> dict[str, str]:
        """A study on this machine alone listens on loopback only, as the server's ZeroMQ
        sockets do: UCX, whose tcp listens on every interface, is kept to loopback, and Open
        MPI's tcp transport, which does the same, is left out (its processes talk through
        shared memory). Unless the user set either."""
        if self.bind_address != "127.0.0.1":
            return {}
        confined = {"UCX_NET_DEVICES": "lo", "OMPI_MCA_btl": "^tcp"}
        return {k: v for k, v in confined.items() if k not in os.environ}

    def server_bind_address(self) -> str:
        """Where the server listens: loopback when every process runs on this machine, else
        the address of the host clients reach it by (MELISSA_SERVER_HOST, or this host's name);
        empty when only the server's node knows it (a batch scheduler places the server). A
        host name that does not resolve would make every simulation wait out its timeout:
        refused now, saying so."""
        host = os.environ.get("MELISSA_SERVER_HOST")
        if host is None and self.scheduler.name == "local":
            return "127.0.0.1"
        if host is None and self.scheduler.name in ("slurm", "oar"):
            return ""
        host = host or socket.gethostname()
        try:
            return socket.gethostbyname(host)
        except (socket.gaierror, UnicodeError) as error:
            raise ConfigError(
                f"the server's host name '{host}' does not resolve on this machine ({error}), "
                "so no simulation could reach it: add it to /etc/hosts, or set "
                "MELISSA_SERVER_HOST to a name or address the simulations can reach") from None

    # -- checkpoints ----------------------------------------------------------------------------

    def finished_in_checkpoint(self) -> set[int] | None:
        """Simulations the last checkpoint holds whole, or None without a usable checkpoint."""
        if self.training:
            if not self.files.checkpoint.exists():
                return None
            import torch

            state = torch.load(self.files.checkpoint, map_location="cpu", weights_only=False)
            ranks = self.config.launcher_config.num_server_processes
            if "buffer_ranks" not in state:
                raise ValueError(f"{self.files.checkpoint} was written by an older melissa, "
                                 "without the replay buffers: finish the study with that "
                                 "melissa, or run it again")
            if state["buffer_ranks"] != ranks:
                raise ValueError(f"{self.files.checkpoint} is of a server of "
                                 f"{state['buffer_ranks']} ranks, the config asks for {ranks} "
                                 "(launcher_config.num_server_processes): each rank's replay "
                                 "buffer was checkpointed on its own")
            # Held-out simulations run again: a rank whose buffer was not restored has none of
            # their samples (a restored one replaces them as they come again).
            assert self.config.dl_config is not None
            return (set(state["finished_simulations"])
                    - set(range(self.config.validation_simulations)))
        from melissa import _core

        ranks = self.config.launcher_config.num_server_processes
        finished: set[int] | None = None
        for rank in range(ranks):
            path = self.files.statistics_checkpoint(rank)
            if not path.exists():
                return None
            summary = _core.checkpoint_summary(path.read_bytes())
            if summary["n_ranks"] != ranks:
                raise ValueError(f"{path} is of a server of {summary['n_ranks']} ranks, the "
                                 f"config asks for {ranks} (launcher_config."
                                 "num_server_processes)")
            here = set(summary["finished"])
            # Complete only where every rank holds it whole: the ranks saved at their own pace.
            finished = here if finished is None else finished & here
        return finished

    def resume_from_checkpoint(self) -> None:
        """For --resume: what the checkpoint holds is done; refused without one."""
        try:
            finished = self.finished_in_checkpoint()
        except ValueError as error:
            raise ConfigError(f"--resume: {error}") from None
        if finished is None:
            if self.training:
                raise ConfigError(f"--resume: {self.files.checkpoint} does not exist")
            ranks = self.config.launcher_config.num_server_processes
            missing = [str(self.files.statistics_checkpoint(rank)) for rank in range(ranks)
                       if not self.files.statistics_checkpoint(rank).exists()]
            raise ConfigError(f"--resume needs a checkpoint of each of the {ranks} server ranks "
                              f"(launcher_config.num_server_processes); missing: "
                              f"{', '.join(missing)}")
        self.take_up(finished)

    def take_up(self, finished: set[int]) -> None:
        """The server resumes with `finished` complete: everything else runs (again)."""
        self.done_before = set(finished)
        lost = self.completed - self.done_before - self.dropped
        if lost:
            log.warning("simulations %s completed after the last checkpoint: they run again",
                        sorted(lost))
        self.completed = set(self.done_before)
        pending = {sim for sim, _ in self.queue}
        for sim in sorted(lost - pending, reverse=True):
            self.queue.appendleft((sim, 0))

    # -- the server -----------------------------------------------------------------------------

    def start_server(self) -> str:
        launcher = self.config.launcher_config
        # Drawn parameters go to a new server in its StudyDescription; losses of a lost server
        # were observed already.
        stale = [self.files.server, self.files.stop, self.files.drawn_parameters,
                 *self.files.private.glob("progress-*.json"),
                 *self.files.private.glob("losses-*.json")]
        if not self.resume:
            stale += [self.product, self.files.metrics, self.files.predictions,
                      *self.files.checkpoints.glob("*")]
        for path in stale:
            path.unlink(missing_ok=True)
        StudyDescription(self.raw_config, f"{self.token:016x}", self.parameters.tolist(),
                         str(self.config_path.parent), self.resume,
                         self.bind_address).write(self.files.study)
        module = "melissa.server.training" if self.training else "melissa.server.statistics"
        spec = JobSpec(
            name="server",
            argv=[sys.executable, "-m", module, str(self.files.output_dir)],
            n_processes=launcher.num_server_processes,
            stdout=self.files.logs / "server.out", stderr=self.files.logs / "server.err",
            cwd=self.files.output_dir, env={**mpi_environment(), **self.network_environment()})
        self.server = self.scheduler.submit(spec)
        self.server_started = time.time()
        self.ranks_progress = [None] * launcher.num_server_processes
        deadline = time.monotonic() + launcher.timeouts.server_start
        while time.monotonic() < deadline:
            published = ServerAnnouncement.read(self.files.server)
            if published is not None:
                log.info("server of %d ranks at %s", len(published.pids), published.address)
                return published.address
            if not self.server.poll().active:
                raise ServerLost(f"the server exited with status {self.server.exit_code} before "
                                 f"taking connections:\n{self.server.stderr_tail()}"
                                 f"(logs in {self.files.logs})")
            time.sleep(POLL_INTERVAL)
        self.server.cancel()
        raise ServerLost(f"the server did not publish its address within "
                         f"{launcher.timeouts.server_start:g} s (launcher_config.timeouts."
                         f"server_start); logs in {self.files.logs}")

    def check_server(self) -> None:
        """The server's processes, and every rank's heartbeat: its progress file."""
        assert self.server is not None
        if not self.server.poll().active:
            raise ServerLost(f"the server stopped (status {self.server.exit_code}) while "
                             f"simulations ran:\n{self.server.stderr_tail()}"
                             f"(logs in {self.files.logs})")
        silence = self.config.launcher_config.timeouts.heartbeat
        now = time.time()
        for rank, progress in enumerate(self.ranks_progress):
            last = progress.time if progress is not None else self.server_started
            if now - last > silence:
                self.server.cancel()
                raise ServerLost(f"server rank {rank} gave no sign of life for {now - last:.0f} "
                                 f"s (launcher_config.timeouts.heartbeat); logs in "
                                 f"{self.files.logs}")

    def read_progress(self) -> None:
        for rank in range(len(self.ranks_progress)):
            with contextlib.suppress(ProtocolError):
                self.ranks_progress[rank] = RankProgress.read(self.files.progress(rank))
        if self.active:
            reports = []
            for rank in range(len(self.ranks_progress)):
                with contextlib.suppress(ProtocolError):
                    reports.append(SimulationLosses.read(self.files.losses(rank)))
            self.sampler.observe(SimulationLosses.combine(reports))

    def server_figures(self) -> str:
        """What the servers' figures say, for the progress display."""
        if self.config.dl_config is not None:
            return live_losses(self.ranks_progress)
        if self.convergence is not None:
            return self.convergence.text
        return ""

    def whole_groups(self) -> int:
        """Sobol groups of which every member completed: those the indices rest on."""
        return convergence.complete_groups(self.completed - self.dropped, self.group_size)

    def check_convergence(self) -> None:
        """Takes the servers' latest interval widths. With sobol_ci_target, once they meet it,
        no other group starts: groups begun (a member started) are completed, their runs are
        data and a group missing a member would count in no index; the others stay not_run."""
        assert self.convergence is not None
        self.convergence.update(self.ranks_progress)
        if not self.convergence.newly_met():
            return
        begun = {sim // self.group_size
                 for sim in (*self.running, *self.completed, *self.failed, *self.dropped)}
        begun |= {sim // self.group_size for sim, attempt in self.queue if attempt > 0}
        skipped = [sim for sim, _ in self.queue if sim // self.group_size not in begun]
        self.queue = deque(item for item in self.queue if item[0] // self.group_size in begun)
        self.progress.total -= len(skipped)
        log.info("the Sobol intervals met sobol_ci_target at %d groups (%s): the study ends "
                 "with the %d groups begun, %d simulations will not run",
                 self.convergence.met_at, self.convergence.text,
                 len(begun - self.dropped_groups), len(skipped))

    def await_sobol_figures(self) -> None:
        """Once every simulation is done: waits for the server's figures of all the groups,
        which lag behind the data by a rank's recompute interval at most."""
        assert self.convergence is not None
        groups = self.whole_groups()
        figures = self.convergence.figures
        deadline = time.monotonic() + 2 * PROGRESS_INTERVAL + 2.0 + (
            figures.interval if figures is not None else convergence.MIN_INTERVAL)
        while time.monotonic() < deadline:
            self.read_progress()
            self.convergence.update(self.ranks_progress)
            figures = self.convergence.figures
            if figures is not None and figures.groups >= groups:
                return
            self.check_server()
            time.sleep(PROGRESS_INTERVAL)
        log.warning("the server's Sobol figures hold %s of the %d groups: the summary's widths "
                    "are of those", figures.groups if figures is not None else "none", groups)

    def confirmed(self, sim: int) -> bool:
        """Whether every server rank holds the simulation whole."""
        return all(p is not None and p.holds(sim) for p in self.ranks_progress)

    def data_seen(self, sim: int) -> list[tuple[int, int]]:
        """(Messages received, (field, time step)s delivered) of an unfinished simulation, by
        server rank."""
        return [p.delivered(sim) if p else (0, 0) for p in self.ranks_progress]

    def restart_server(self, lost: ServerLost) -> str:
        """A new server, from the last checkpoint, in place of a lost one; its address. Raises
        StudyError once launcher_config.server_restarts restarts are spent."""
        limit = self.config.launcher_config.server_restarts
        self.cancel_simulations()
        while True:
            if self.outcome.server_restarts >= limit:
                raise StudyError(f"{lost}\nThe server was restarted {limit} times already "
                                 "(launcher_config.server_restarts); its checkpoints are kept: "
                                 "`melissa run --resume` takes the study up") from None
            self.outcome.server_restarts += 1
            log.error("%s", lost)
            assert self.server is not None
            self.server.cancel()
            try:
                finished = self.finished_in_checkpoint()
            except ValueError as error:
                log.error("the checkpoint cannot be used (%s): the study starts over", error)
                finished = None
            self.resume = finished is not None
            self.take_up(finished or set())
            log.warning("restarting the server (%d of at most %d) from %s",
                        self.outcome.server_restarts, limit,
                        "its last checkpoint" if self.resume else "scratch: no checkpoint")
            try:
                return self.start_server()
            except ServerLost as again:
                lost = again

    def statuses(self) -> list[str]:
        """Of every simulation drawn, by id."""
        return ["failed" if sim in self.failed else "dropped" if sim in self.dropped else
                "completed" if sim in self.completed else "not_run"
                for sim in range(len(self.parameters))]

    def stop_request(self, write_results: bool) -> StopRequest:
        return StopRequest(sorted(self.completed - self.done_before - self.dropped),
                           sorted(self.done_before), self.statuses(), self.parameters.tolist(),
                           write_results, self.how_it_ended())

    def how_it_ended(self) -> dict[str, Any]:
        """What results.nc records of how the study ended: for Sobol indices, the groups behind
        them and why no more ran."""
        if self.convergence is None:
            return {}
        c = self.convergence
        why = (f"sobol_ci_target {c.target:g} met by {c.share:.0%} of the 95 % confidence "
               f"intervals at {c.met_at} groups" if c.met_at is not None else
               f"every group of parameter_sweep_size "
               f"{self.config.study_options.parameter_sweep_size} ran")
        return {"sobol_groups": self.whole_groups(), "sobol_stopped_by": why}

    def finish_server(self, write_results: bool = True) -> None:
        """Tells the server what completed; waits for it to write the results."""
        assert self.server is not None
        self.stop_request(write_results).write(self.files.stop)
        shutdown = self.config.launcher_config.timeouts.shutdown
        state = self.server.wait(shutdown + 30.0)
        if state.active:
            self.server.cancel()
            raise ServerLost(f"the server did not finish within {shutdown:g} s "
                             f"(launcher_config.timeouts.shutdown); logs in {self.files.logs}")
        if not write_results:
            return
        if self.server.exit_code == EXIT_RESULTS_UNWRITABLE:
            raise StudyError(f"the server could not write the results:\n"
                             f"{self.server.stderr_tail()}Its final checkpoint holds every "
                             "simulation: once the cause is fixed, `melissa run --resume` "
                             f"writes them (logs in {self.files.logs})")
        if state is JobState.FAILED or not self.product.exists():
            raise ServerLost(f"the server failed at the end of the study (status "
                             f"{self.server.exit_code}):\n{self.server.stderr_tail()}"
                             f"(logs in {self.files.logs})")
        self.outcome.results = self.product
        if self.training:
            self.outcome.losses = final_losses(self.files.metrics)
            self.write_parameters()

    # -- simulations ----------------------------------------------------------------------------

    def simulation_spec(self, sim: int, address: str) -> JobSpec:
        launcher = self.config.launcher_config
        # repr() writes the shortest text that reads back as the same double.
        arguments = [repr(float(v)) for v in self.parameters[sim]]
        env = {
            "MELISSA_SERVER_ADDRESS": address,
            "MELISSA_SIMULATION_ID": str(sim),
            # Inria Melissa's name for it, which run scripts written for Melissa may read.
            "MELISSA_SIMU_ID": str(sim),
            "MELISSA_STUDY_TOKEN": f"{self.token:016x}",
            "MELISSA_TIMEOUT": f"{launcher.timeouts.transport:g}",
            **mpi_environment(),
            **self.network_environment(),
        }
        return JobSpec(name=f"simulation-{sim}", argv=[*self.solver, *arguments],
                       n_processes=launcher.num_client_processes,
                       stdout=self.files.simulation_log(sim, "out"),
                       stderr=self.files.simulation_log(sim, "err"),
                       cwd=self.config_path.parent, env=env)

    def start_simulations(self, batch: list[tuple[int, int]], address: str) -> None:
        """Submits (simulation, attempt)s together: a batch scheduler takes them in one call."""
        specs = [self.simulation_spec(sim, address) for sim, _ in batch]
        for (_, attempt), spec in zip(batch, specs, strict=True):
            if attempt > 0:
                for stream in (spec.stdout, spec.stderr):
                    with open(stream, "a") as f:
                        f.write(f"\n=== melissa: attempt {attempt + 1} ===\n")
        jobs = self.scheduler.submit_all(specs)
        now = time.monotonic()
        for (sim, attempt), job in zip(batch, jobs, strict=True):
            self.running[sim] = _Running(job, now, attempt, now)
            log.info("simulation %d started (attempt %d) as %s: %s", sim, attempt + 1,
                     job.name, shlex.join(job.spec.argv))

    def cancel_simulations(self) -> None:
        """Stops every running simulation; each will start again, its attempt not counted."""
        for sim, run in sorted(self.running.items(), reverse=True):
            run.job.cancel()
            self.queue.appendleft((sim, run.attempt))
        self.running.clear()

    # -- parameters drawn while the study runs --------------------------------------------------

    def to_draw(self) -> int:
        """Simulations whose parameters are not drawn yet (active sampling)."""
        return max(0, self.config.n_simulations - len(self.parameters))

    def draw_more(self, n: int) -> None:
        """Draws the next simulations from what the servers have reported so far, tells the
        servers their parameters and keeps the sampler's state, then queues them."""
        first = len(self.parameters)
        try:
            drawn = self.sampler.draw(min(n, self.to_draw()))
        except ValueError as error:
            raise StudyError(f"dl_config.active_sampling.method: {error}") from None
        self.parameters = np.concatenate([self.parameters, drawn])
        DrawnParameters(self.parameters.tolist()).write(self.files.drawn_parameters)
        self.save_sampler()
        self.queue.extend((sim, 0) for sim in range(first, len(self.parameters)))
        for sim in range(first, len(self.parameters)):
            log.info("simulation %d drawn (%s): %s", sim, self.sampler.origins[sim],
                     self.parameters[sim].tolist())

    def save_sampler(self) -> None:
        write_json(self.files.sampler, self.sampler.state())

    def resume_sampler(self) -> None:
        """For --resume: the draws go on where the stopped study left them."""
        state = read_json(self.files.sampler)
        if state is None:
            if self.active:
                raise ConfigError(f"--resume: {self.files.sampler}, the state of "
                                  "dl_config.active_sampling's draws, does not exist")
            return
        self.sampler.load_state(state)
        self.parameters = self.sampler.parameters()

    def write_parameters(self) -> None:
        """parameters.csv: every simulation's parameters, status, how they were drawn and, with
        active sampling, the last loss the training server reported of it."""
        losses = self.sampler.losses if isinstance(self.sampler, ActiveSampler) else {}
        with open(self.files.parameters, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["simulation", "status", "origin", "loss",
                             *self.config.study_options.names])
            for sim, (row, status, origin) in enumerate(zip(
                    self.parameters, self.statuses(), self.sampler.origins, strict=True)):
                writer.writerow([sim, status, origin, losses.get(sim, ""),
                                 *(repr(float(v)) for v in row)])

    def run_simulations(self, address: str) -> None:
        timeout = self.config.study_options.simulation_timeout
        last_progress = 0.0
        while self.queue or self.running or self.to_draw():
            self.check_server()
            free = self.room()
            if not self.queue and free > 0 and self.to_draw():
                self.draw_more(free)
            if self.queue and free > 0:
                self.start_simulations([self.queue.popleft()
                                        for _ in range(min(free, len(self.queue)))], address)
            now = time.monotonic()
            if now - last_progress >= PROGRESS_INTERVAL:
                self.read_progress()
                last_progress = now
                if self.convergence is not None:
                    self.check_convergence()
            for sim, run in list(self.running.items()):
                if self.running.get(sim) is not run:
                    continue  # stopped meanwhile, with its dropped Sobol group
                seen = sum(messages + steps for messages, steps in self.data_seen(sim))
                if seen > run.received:
                    run.received, run.last_data = seen, now
                if run.exited is None:
                    state = run.job.poll()
                    if state is JobState.PENDING:
                        run.last_data = now  # the silence counts from its start
                        continue
                    if state is JobState.RUNNING:
                        if now - run.last_data > timeout:
                            run.job.cancel()
                            self.attempt_failed(sim, run, f"sent nothing for {timeout:g} s "
                                                "(study_options.simulation_timeout): killed")
                        continue
                    if state is JobState.FAILED:
                        last = _last_line(run.job.stderr_tail())
                        self.attempt_failed(sim, run, f"exit status {run.job.exit_code}"
                                            + (f": {last}" if last else ""))
                        continue
                    run.exited = run.last_data = now
                if self.confirmed(sim):
                    del self.running[sim]
                    self.completed.add(sim)
                    log.info("simulation %d completed in %.1f s", sim, now - run.started)
                elif now - run.last_data > CONFIRMATION_TIMEOUT:
                    study = self.config.study_options
                    self.attempt_failed(
                        sim, run, f"exited with status 0, but the server does not hold all of "
                        f"its data: every one of the {study.nb_time_steps} time steps "
                        f"(study_options.nb_time_steps) of each of the fields "
                        f"{study.field_names}, then finalize ((field, time step)s held, by "
                        f"server rank: {[steps for _, steps in self.data_seen(sim)]})")
            self.progress.update(len(self.completed - self.dropped),
                                 sum(r.exited is None for r in self.running.values()),
                                 len(self.failed), self.server_figures())
            time.sleep(POLL_INTERVAL)
        if self.convergence is not None:
            self.await_sobol_figures()

    def room(self) -> int:
        """How many simulations to start now."""
        active = [run for run in self.running.values() if run.exited is None]
        if self.job_limit is not None:
            return self.job_limit - len(active)
        pending = sum(run.job.poll() is JobState.PENDING for run in active)
        return min(max(AUTO_PENDING, (len(active) - pending) // 10) - pending,
                   self.most_at_once - len(active))

    def attempt_failed(self, sim: int, run: _Running, reason: str) -> None:
        del self.running[sim]
        tail = run.job.stderr_tail()
        # The same error again and again is printed once: a broken solver must not bury the
        # console under hundreds of copies of its traceback.
        signature = _signature(reason, tail)
        shown = ("its stderr is empty" if not tail.strip() else
                 f"its stderr ends with:\n{tail}" if signature != self.last_tail else
                 "its stderr ends as the previous failure's")
        self.last_tail = signature
        if run.attempt < self.config.launcher_config.simulation_retries:
            log.warning("simulation %d failed (%s), starting it again; %s", sim, reason, shown)
            self.queue.appendleft((sim, run.attempt + 1))
            return
        self.failed[sim] = reason
        log.error("simulation %d failed (%s) after %d attempts; %s; logs: %s", sim, reason,
                  run.attempt + 1, shown, run.job.spec.stderr)
        self.check_fail_fast(reason, tail)
        if self.config.sobol:
            self.redraw_group(sim // self.group_size)

    def check_fail_fast(self, reason: str, tail: str) -> None:
        """Stops the study when the first simulations to fail for good, before any completed,
        all failed the same way: the solver cannot run, and every other one would fail too."""
        if self.completed:
            return
        self.first_failures.append(_signature(reason, tail))
        failures = min(FAIL_FAST_FAILURES, len(self.parameters))
        if len(self.first_failures) == failures and len(set(self.first_failures)) == 1:
            raise FailFast(f"the first {failures} simulations all failed the same way ({reason}) "
                           f"before any completed: the solver cannot run as configured "
                           f"(client_config.executable_command). Its stderr ends with:\n{tail}"
                           f"Nothing was written that would block a new run; logs in "
                           f"{self.files.logs}")

    def redraw_group(self, group: int) -> None:
        """Drops a Sobol group whose member failed for good and queues a new one drawn in its
        place: the study still ends with the groups it asked for, each of them whole. The
        dropped group's A and B runs go on: the other statistics use every A and B run, and
        must not depend on when the group was dropped; its C runs, of use to the indices
        only, are stopped."""
        members = range(group * self.group_size, (group + 1) * self.group_size)
        if group in self.dropped_groups:
            return
        limit = self.config.study_options.parameter_sweep_size
        if self.outcome.redrawn_groups >= limit:
            log.error("Sobol group %d lost a member for good; %d groups were redrawn already, "
                      "as many as the study has: no more (does the solver fail for a whole "
                      "region of the parameters?)", group, limit)
            return
        self.dropped_groups.add(group)
        pick_freeze = set(members[2:]) - set(self.failed)
        for sim in pick_freeze:
            if sim in self.running:
                self.running.pop(sim).job.cancel()
        self.dropped |= pick_freeze
        self.completed -= pick_freeze
        self.queue = deque((sim, attempt) for sim, attempt in self.queue
                           if sim not in pick_freeze)
        if self.convergence is not None and self.convergence.met_at is not None:
            self.progress.total -= len(pick_freeze)
            log.warning("Sobol group %d (simulations %d-%d) dropped: simulation(s) %s failed for "
                        "good; none drawn in its place, the intervals met sobol_ci_target",
                        group, members[0], members[-1],
                        sorted(set(members) & set(self.failed)))
            return
        first = len(self.parameters)
        replacement = draw_replacement_group(self.config.study_options,
                                             self.outcome.redrawn_groups)
        self.parameters = np.concatenate([self.parameters, replacement])
        self.outcome.redrawn_groups += 1
        self.queue.extend((sim, 0) for sim in range(first, len(self.parameters)))
        self.progress.total = len(self.parameters) - len(self.dropped)
        log.warning("Sobol group %d (simulations %d-%d) dropped: simulation(s) %s failed for "
                    "good; group %d (simulations %d-%d) drawn in its place", group,
                    members[0], members[-1], sorted(set(members) & set(self.failed)),
                    first // self.group_size, first, len(self.parameters) - 1)

    # -- the whole study ------------------------------------------------------------------------

    def supervise(self) -> None:
        """Runs the simulations and has the results written, restarting the server whenever it
        is lost."""
        try:
            address = self.start_server()
        except ServerLost as lost:
            raise StudyError(str(lost)) from None
        while True:
            try:
                self.run_simulations(address)
                self.finish_server()
                return
            except ServerLost as lost:
                address = self.restart_server(lost)
            except FailFast as abandon:
                self.cancel_simulations()
                self.queue.clear()
                with contextlib.suppress(ServerLost):  # it is cancelled below all the same
                    self.finish_server(write_results=False)
                raise StudyError(str(abandon)) from None
            except BaseException:
                # Interrupted (Ctrl-C, SIGTERM) or failed: what completed is kept, the server
                # writes it out.
                self.cancel_simulations()
                if self.server is not None and self.server.poll().active:
                    try:
                        self.finish_server()
                    except ServerLost as lost:
                        log.error("%s; the checkpoints are kept: `melissa run --resume` "
                                  "takes the study up", lost)
                raise

    def run(self) -> Outcome:
        start, cpu_start = time.monotonic(), time.process_time()
        self.files.create()
        self.presence.acquire()
        if not self.resume:
            # This run's logs, not beside the last run's (a resumed run adds to them). Only now
            # that the lock is held: a launcher turned away must not touch a running study's.
            shutil.rmtree(self.files.logs)
            self.files.create()
        handler = logging.FileHandler(self.files.logs / "launcher.log")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        logging.getLogger("melissa").addHandler(handler)
        try:
            if self.resume:
                self.resume_sampler()
                self.resume_from_checkpoint()
            self.save_sampler()
            self.queue.extend((sim, 0) for sim in range(len(self.parameters))
                              if sim not in self.done_before)
            drawn = (f" ({len(self.parameters)} drawn so far)" if self.to_draw() else "")
            log.info("study %s: %d simulations%s, %d server ranks, job limit %s",
                     self.config_path, max(self.config.n_simulations, len(self.parameters)),
                     drawn,
                     self.config.launcher_config.num_server_processes,
                     self.job_limit or f"auto (as many as {self.scheduler.name} starts, "
                                       f"{AUTO_PENDING}+ waiting in its queue, at most "
                                       f"{self.most_at_once})")
            with self.progress:
                self.supervise()
        finally:
            self.cancel_simulations()
            if self.server is not None:
                self.server.cancel()
            self.presence.release()
            self.outcome.seconds = time.monotonic() - start
            self.summarise()
            # What the launcher itself costs (its jobs not counted): bench_launcher.py reads it.
            log.info("launcher: %.2f s of CPU over %.1f s", time.process_time() - cpu_start,
                     self.outcome.seconds)
            logging.getLogger("melissa").removeHandler(handler)
            handler.close()
        return self.outcome

    def summarise(self) -> None:
        outcome = self.outcome
        outcome.completed = sorted(self.completed - self.dropped)
        outcome.failed = sorted(self.failed)
        outcome.dropped = sorted(self.dropped)
        outcome.reasons = {sim: self.failed[sim] for sim in outcome.failed}
        # With active sampling, those never drawn too.
        planned = max(len(self.parameters), self.config.n_simulations)
        outcome.not_run = sorted(set(range(planned)) - self.completed
                                 - set(self.failed) - self.dropped)
        if self.convergence is not None:
            c = self.convergence
            outcome.sobol = convergence.Summary(
                self.whole_groups(), self.config.study_options.parameter_sweep_size, c.target,
                c.share, c.met_at, c.figures)


def _last_line(text: str) -> str:
    return next((line.strip() for line in reversed(text.splitlines()) if line.strip()), "")


def _signature(reason: str, tail: str) -> str:
    """A failure with its numbers masked: simulations failing the same way differ only there."""
    return re.sub(r"\d+", "#", f"{reason} | {_last_line(tail)}")


def run_study(config_path: str | Path, *, overwrite: bool = False, resume: bool = False,
              interactive: bool | None = None) -> Outcome:
    """Runs the study of a config file; see StudyRun."""
    config, _ = load_config(config_path)
    tty = sys.stderr.isatty() if interactive is None else interactive
    progress = Progress(config.n_simulations, interactive=tty)
    return StudyRun(config_path, overwrite=overwrite, resume=resume, progress=progress).run()
