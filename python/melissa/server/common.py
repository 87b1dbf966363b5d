# SPDX-License-Identifier: BSD-3-Clause
"""What both servers do besides their work: tell the launcher what they receive, notice when
the launcher says the study is over, and stop by themselves when the launcher is gone."""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mpi4py import MPI

from melissa import _core
from melissa.config import Config, parse_config
from melissa.protocol import (
    LauncherHeartbeat,
    ProtocolError,
    RankProgress,
    ServerAnnouncement,
    StopRequest,
    StudyDescription,
    ranges,
)
from melissa.study_files import StudyFiles

log = logging.getLogger("melissa.server")

PROGRESS_INTERVAL = 1.0  # seconds between progress files: the launcher's view of the data flow


@dataclass
class Study:
    """What a server rank starts from: its communicator, the study's files, and what the
    launcher wrote there."""

    comm: Any
    files: StudyFiles
    study: StudyDescription
    config: Config

    def publish(self, address: str) -> None:
        """Tells the launcher (and through it the clients) where to connect, and which
        processes are the server's (collective)."""
        pids = self.comm.gather(os.getpid())
        hosts = self.comm.gather(socket.gethostname())
        if self.comm.rank == 0:
            ServerAnnouncement(address, pids, hosts).write(self.files.server)
            log.info("clients connect to %s", address)

    def withdraw(self) -> None:
        """At a rank's end (collective): no server of this study runs any more. Only once every
        rank has saved what it holds: a launcher that finds server.json gone takes the
        checkpoints up, and a rank still saving its own would be missed."""
        self.comm.Barrier()
        if self.comm.rank == 0:
            self.files.server.unlink(missing_ok=True)


def start(argv: list[str] | None, description: str) -> Study | None:
    """Parses `python -m melissa.server.X OUTPUT_DIR`, logs to the rank's log file and reads
    the study the launcher wrote; None (logged) if it did not."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("output_dir", type=Path)
    args = parser.parse_args(argv)
    comm = MPI.COMM_WORLD
    files = StudyFiles(args.output_dir)
    logging.basicConfig(
        filename=files.server_log(comm.rank), level=logging.INFO,
        format=f"%(asctime)s [server {comm.rank}] %(levelname)s %(message)s")
    try:
        study = StudyDescription.read(files.study)
    except ProtocolError as error:
        log.error("%s", error)
        return None
    if study is None:
        log.error("%s is missing: the server must be started by the launcher", files.study)
        return None
    return Study(comm, files, study, parse_config(study.config))


def run_rank(main: Callable[[], int]) -> None:
    """Runs a server rank's main; any failure aborts every rank, so that none is left waiting
    in a collective (mpi4py's advice)."""
    try:
        sys.exit(main())
    except Exception:
        log.exception("server failed")
        MPI.COMM_WORLD.Abort(1)


class Watch:
    """A server rank's link to the launcher, polled from its main loop."""

    def __init__(self, files: StudyFiles, rank: int, receiver: _core.Receiver,
                 config: Config) -> None:
        self.files, self.rank, self.receiver = files, rank, receiver
        self.shutdown_timeout = config.launcher_config.timeouts.shutdown
        self.heartbeat_timeout = config.launcher_config.timeouts.heartbeat
        self._last_progress = 0.0
        self._stop_seen: float | None = None
        self._launcher_gone = False
        # The server's own figures, passed on in every progress file (RankProgress.metrics).
        self.metrics: dict[str, Any] = {}

    def report_progress(self) -> None:
        """Rewrites this rank's progress file (its heartbeat) and looks for the launcher's, at
        most every PROGRESS_INTERVAL seconds."""
        now = time.monotonic()
        if now - self._last_progress < PROGRESS_INTERVAL:
            return
        self._last_progress = now
        finished = set(self.receiver.finished_simulations())
        counters = self.receiver.counters()
        # Only simulations still in flight: the file stays small however large the study.
        in_flight = [[sim, c["messages"], c["time_steps"]]
                     for sim, c in counters["simulations"].items() if sim not in finished]
        RankProgress(self.rank, time.time(), ranges(finished), in_flight,
                     counters["dropped"], self.metrics).write(self.files.progress(self.rank))
        heartbeat = LauncherHeartbeat.read(self.files.launcher)
        if heartbeat is None or not heartbeat.alive(self.heartbeat_timeout):
            if not self._launcher_gone:
                log.error("the launcher is gone (%s): this server stops after a final "
                          "checkpoint; `melissa run --resume` takes the study up",
                          "its heartbeat file was removed" if heartbeat is None else
                          f"pid {heartbeat.pid} on {heartbeat.host}")
            self._launcher_gone = True

    @property
    def launcher_gone(self) -> bool:
        return self._launcher_gone

    def study_over(self) -> StopRequest | None:
        """The launcher's stop request once every simulation it lists as completed has all of
        its data here (or the shutdown timeout has passed); None before."""
        stop = StopRequest.read(self.files.stop)
        if stop is None:
            return None
        now = time.monotonic()
        self._stop_seen = self._stop_seen or now
        missing = set(stop.completed) - set(self.receiver.finished_simulations())
        if not missing or not stop.write_results:
            return stop
        if now - self._stop_seen > self.shutdown_timeout:
            log.error("simulations %s completed but their data never fully arrived here; what "
                      "did arrive is used", sorted(missing))
            return stop
        return None
