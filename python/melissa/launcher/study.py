# SPDX-License-Identifier: BSD-3-Clause
"""Running a study: draw the parameters, start the server, run every simulation within the job
limit, watch them all, and tell the server when to write its results."""

from __future__ import annotations

import logging
import shlex
import socket
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from melissa.config import ConfigError, load_config
from melissa.launcher.preflight import check_training_modules, resolve_solver
from melissa.launcher.progress import Progress
from melissa.launcher.schedulers import Job, JobSpec, JobState, make_scheduler, mpi_environment
from melissa.sampling import draw_parameters
from melissa.server.receiver import study_token
from melissa.study_files import StudyFiles, read_json, write_json

log = logging.getLogger("melissa.launcher")

# Between two looks at the jobs: a job slot stays idle up to this long after a simulation ends,
# which with simulations of a fraction of a second cost a tenth of the study at 0.1 s.
POLL_INTERVAL = 0.02
# Between two reads of the servers' progress files (for the silence timeout).
PROGRESS_INTERVAL = 0.5


class StudyError(RuntimeError):
    """The study cannot go on (its server failed, say); the message says why."""


@dataclass
class Outcome:
    completed: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    not_run: list[int] = field(default_factory=list)
    results: Path | None = None
    seconds: float = 0.0


@dataclass
class _Running:
    job: Job
    started: float
    attempt: int
    last_data: float  # when the server last saw data of it (start time until then)
    received: int = 0


class StudyRun:
    def __init__(self, config_path: str | Path, *, overwrite: bool = False, resume: bool = False,
                 progress: Progress | None = None) -> None:
        self.config_path = Path(config_path).resolve()
        self.config, output_dir = load_config(self.config_path)
        self.raw_config: dict[str, Any] = self.config.model_dump(mode="json")
        self.solver = resolve_solver(self.config, self.config_path.parent)
        self.files = StudyFiles(output_dir)
        self.training = self.config.dl_config is not None
        if self.training:
            check_training_modules()
        if self.config.dl_config is not None and self.config.dl_config.server_class:
            # Found and checked now, before anything starts, as the server will load it.
            from melissa.server.training import load_server_class

            try:
                load_server_class(self.config.dl_config.server_class, self.config_path.parent)
            except (ImportError, AttributeError, TypeError, ValueError) as error:
                raise ConfigError(f"dl_config.server_class: {error}") from None
        self.product = self.files.model if self.training else self.files.results
        self.resume = resume
        self.parameters = draw_parameters(self.config.study_options, self.config.sobol)
        self.done_before: set[int] = set()
        if resume:
            self.done_before = self.finished_in_checkpoint()
        elif self.product.exists() and not overwrite:
            raise ConfigError(f"{self.product} exists: another study's results; choose "
                              "another output_dir or pass --overwrite")
        launcher = self.config.launcher_config
        self.scheduler = make_scheduler(launcher.scheduler, launcher.mpirun_options)
        self.token = study_token()
        self.progress = progress or Progress(self.config.n_simulations, interactive=False)
        self.server: Job | None = None

    def finished_in_checkpoint(self) -> set[int]:
        """Simulations a resumed study need not run again: those its checkpoint holds whole."""
        if self.training:
            if not self.files.checkpoint.exists():
                raise ConfigError(f"--resume: {self.files.checkpoint} does not exist")
            import torch

            state = torch.load(self.files.checkpoint, map_location="cpu", weights_only=False)
            done = set(state["finished_simulations"])
            # Held-out simulations run again: their samples lived in the servers' memory.
            assert self.config.dl_config is not None
            return done - set(range(self.config.dl_config.validation_simulations))
        ranks = self.config.launcher_config.num_server_processes
        paths = [self.files.statistics_checkpoint(rank) for rank in range(ranks)]
        missing = [str(p) for p in paths if not p.exists()]
        if missing:
            raise ConfigError(f"--resume needs a checkpoint of each of the {ranks} server ranks "
                              f"(launcher_config.num_server_processes); missing: "
                              f"{', '.join(missing)}")
        from melissa import _core

        finished: set[int] | None = None
        for path in paths:
            try:
                here = set(_core.checkpoint_summary(path.read_bytes())["finished"])
            except ValueError as err:
                raise ConfigError(f"--resume: {path}: {err}") from err
            # Complete only where every rank holds it whole: the ranks saved at their own pace.
            finished = here if finished is None else finished & here
        return finished or set()

    # -- the server ---------------------------------------------------------------------------

    def start_server(self) -> str:
        launcher = self.config.launcher_config
        stale = [self.files.server, self.files.stop]
        if not self.resume:
            stale += [self.product, self.files.metrics, self.files.predictions]
        for path in stale:
            path.unlink(missing_ok=True)
        write_json(self.files.study, {"config": self.raw_config, "token": f"{self.token:016x}",
                                      "parameters": self.parameters.tolist(),
                                      "config_dir": str(self.config_path.parent),
                                      "resume": self.resume})
        module = "melissa.server.training" if self.training else "melissa.server.statistics"
        spec = JobSpec(
            name="server",
            argv=[sys.executable, "-m", module, str(self.files.output_dir)],
            n_processes=launcher.num_server_processes,
            stdout=self.files.logs / "server.out", stderr=self.files.logs / "server.err",
            cwd=self.files.output_dir, env=mpi_environment())
        self.server = self.scheduler.submit(spec)
        deadline = time.monotonic() + launcher.timeouts.server_start
        while time.monotonic() < deadline:
            published = read_json(self.files.server)
            if published is not None:
                log.info("server of %d ranks at %s", published["ranks"], published["address"])
                self.check_server_host(str(published["address"]))
                return str(published["address"])
            if self.server.poll() is not JobState.RUNNING:
                raise StudyError(f"the server exited with status {self.server.exit_code} before "
                                 f"taking connections:\n{self.server.stderr_tail()}"
                                 f"(logs in {self.files.logs})")
            time.sleep(POLL_INTERVAL)
        self.server.cancel()
        raise StudyError(f"the server did not publish its address within "
                         f"{launcher.timeouts.server_start:g} s (launcher_config.timeouts."
                         f"server_start); logs in {self.files.logs}")

    def check_server_host(self, address: str) -> None:
        """A host name that does not resolve (a container's, missing from /etc/hosts) would make
        every simulation wait for the server until its timeout, then fail: stop now, saying so."""
        host = urlsplit(address).hostname or ""
        try:
            socket.getaddrinfo(host, None)
        except (socket.gaierror, UnicodeError) as error:
            assert self.server is not None
            self.server.cancel()
            raise StudyError(
                f"the server's host name '{host}' does not resolve on this machine ({error}), "
                "so no simulation could reach it: add it to /etc/hosts, or set "
                "MELISSA_SERVER_HOST to a name or address the simulations can reach") from None

    def check_server(self) -> None:
        assert self.server is not None
        if self.server.poll() is not JobState.RUNNING:
            raise StudyError(f"the server stopped (status {self.server.exit_code}) while "
                             f"simulations ran:\n{self.server.stderr_tail()}"
                             f"(logs in {self.files.logs})")

    def received_by_simulation(self) -> dict[int, int]:
        """Messages the server ranks have received of each simulation still in flight."""
        received: dict[int, int] = {}
        for rank in range(self.config.launcher_config.num_server_processes):
            progress = read_json(self.files.progress(rank)) or {}
            for sim, count in progress.get("received", {}).items():
                received[int(sim)] = received.get(int(sim), 0) + int(count)
        return received

    # -- simulations --------------------------------------------------------------------------

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
        }
        return JobSpec(name=f"simulation-{sim}", argv=[*self.solver, *arguments],
                       n_processes=launcher.num_client_processes,
                       stdout=self.files.simulation_log(sim, "out"),
                       stderr=self.files.simulation_log(sim, "err"),
                       cwd=self.config_path.parent, env=env)

    def run_simulations(self, address: str, outcome: Outcome) -> None:
        launcher = self.config.launcher_config
        timeout = self.config.study_options.simulation_timeout
        queue: deque[tuple[int, int]] = deque(
            (sim, 0) for sim in range(len(self.parameters)) if sim not in self.done_before)
        outcome.completed.extend(sorted(self.done_before))
        running: dict[int, _Running] = {}
        received: dict[int, int] = {}
        last_progress = 0.0
        try:
            while queue or running:
                self.check_server()
                while queue and len(running) < launcher.job_limit:
                    sim, attempt = queue.popleft()
                    spec = self.simulation_spec(sim, address)
                    if attempt > 0:
                        for stream in (spec.stdout, spec.stderr):
                            with open(stream, "a") as f:
                                f.write(f"\n=== melissa: attempt {attempt + 1} ===\n")
                    job = self.scheduler.submit(spec)
                    now = time.monotonic()
                    running[sim] = _Running(job, now, attempt, now)
                    log.info("simulation %d started (attempt %d): %s", sim, attempt + 1,
                             shlex.join(job.spec.argv))
                now = time.monotonic()
                if now - last_progress >= PROGRESS_INTERVAL:
                    received, last_progress = self.received_by_simulation(), now
                for sim, run in list(running.items()):
                    state = run.job.poll()
                    if state is JobState.RUNNING:
                        if received.get(sim, 0) > run.received:
                            run.received, run.last_data = received[sim], now
                        if now - run.last_data > timeout:
                            log.error("simulation %d sent nothing for %g s "
                                      "(study_options.simulation_timeout): killed", sim, timeout)
                            run.job.cancel()
                            state = JobState.FAILED
                        else:
                            continue
                    del running[sim]
                    if state is JobState.COMPLETED:
                        outcome.completed.append(sim)
                        log.info("simulation %d completed in %.1f s", sim, now - run.started)
                    elif run.attempt < launcher.simulation_retries:
                        log.warning("simulation %d failed (exit status %s), starting it again; "
                                    "its stderr ends with:\n%s", sim, run.job.exit_code,
                                    run.job.stderr_tail())
                        queue.appendleft((sim, run.attempt + 1))
                    else:
                        outcome.failed.append(sim)
                        log.error("simulation %d failed (exit status %s) after %d attempts; "
                                  "logs: %s", sim, run.job.exit_code, run.attempt + 1,
                                  run.job.spec.stderr)
                self.progress.update(len(outcome.completed), len(running), len(outcome.failed))
                time.sleep(POLL_INTERVAL)
        finally:
            for run in running.values():
                run.job.cancel()
            outcome.not_run = sorted(set(range(len(self.parameters))) - set(outcome.completed)
                                     - set(outcome.failed))

    def finish_server(self, outcome: Outcome) -> None:
        """Tells the server what completed; waits for it to write the results."""
        assert self.server is not None
        # The servers wait for the data of "completed": those of this run only.
        write_json(self.files.stop, {
            "completed": sorted(set(outcome.completed) - self.done_before),
            "completed_before": sorted(self.done_before), "failed": sorted(outcome.failed)})
        shutdown = self.config.launcher_config.timeouts.shutdown
        state = self.server.wait(shutdown + 30.0)
        if state is JobState.RUNNING:
            self.server.cancel()
            raise StudyError(f"the server did not finish within {shutdown:g} s "
                             f"(launcher_config.timeouts.shutdown); logs in {self.files.logs}")
        if state is JobState.FAILED or not self.product.exists():
            raise StudyError(f"the server failed at the end of the study (status "
                             f"{self.server.exit_code}):\n{self.server.stderr_tail()}"
                             f"(logs in {self.files.logs})")
        outcome.results = self.product

    def run(self) -> Outcome:
        start = time.monotonic()
        self.files.create()
        handler = logging.FileHandler(self.files.logs / "launcher.log")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        logging.getLogger("melissa").addHandler(handler)
        outcome = Outcome()
        try:
            log.info("study %s: %d simulations, %d server ranks, job limit %d",
                     self.config_path, len(self.parameters),
                     self.config.launcher_config.num_server_processes,
                     self.config.launcher_config.job_limit)
            address = self.start_server()
            with self.progress:
                try:
                    self.run_simulations(address, outcome)
                finally:
                    # Interrupted or not, what completed is kept: the server writes it out.
                    if self.server is not None and self.server.poll() is JobState.RUNNING:
                        self.finish_server(outcome)
        finally:
            if self.server is not None:
                self.server.cancel()
            outcome.seconds = time.monotonic() - start
            logging.getLogger("melissa").removeHandler(handler)
            handler.close()
        return outcome


def run_study(config_path: str | Path, *, overwrite: bool = False, resume: bool = False,
              interactive: bool | None = None) -> Outcome:
    """Runs the study of a config file; see StudyRun."""
    config, _ = load_config(config_path)
    tty = sys.stderr.isatty() if interactive is None else interactive
    progress = Progress(config.n_simulations, interactive=tty)
    return StudyRun(config_path, overwrite=overwrite, resume=resume, progress=progress).run()
