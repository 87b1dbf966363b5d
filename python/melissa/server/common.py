# SPDX-License-Identifier: BSD-3-Clause
"""What both servers do besides their work: tell the launcher what they receive, and notice
when the launcher says the study is over."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mpi4py import MPI

from melissa import _core
from melissa.config import Config, parse_config
from melissa.study_files import StudyFiles, read_json, write_json

log = logging.getLogger("melissa.server")

PROGRESS_INTERVAL = 1.0  # seconds between progress files: the launcher's view of the data flow


@dataclass
class Study:
    """What a server rank starts from: its communicator, the study's files, and what the
    launcher wrote there."""

    comm: Any
    files: StudyFiles
    study: dict[str, Any]
    config: Config

    def publish(self, address: str) -> None:
        """Rank 0: tells the launcher (and through it the clients) where to connect."""
        if self.comm.rank == 0:
            write_json(self.files.server, {"address": address, "ranks": self.comm.size,
                                           "pid": os.getpid()})
            log.info("clients connect to %s", address)


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
    study = read_json(files.study)
    if study is None:
        log.error("%s is missing: the server must be started by the launcher", files.study)
        return None
    return Study(comm, files, study, parse_config(study["config"]))


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
                 shutdown_timeout: float) -> None:
        self.files, self.rank, self.receiver = files, rank, receiver
        self.shutdown_timeout = shutdown_timeout
        self._last_progress = 0.0
        self._stop_seen: float | None = None

    def report_progress(self) -> None:
        """Rewrites this rank's progress file, at most every PROGRESS_INTERVAL seconds."""
        now = time.monotonic()
        if now - self._last_progress < PROGRESS_INTERVAL:
            return
        self._last_progress = now
        finished = set(self.receiver.finished_simulations())
        counters = self.receiver.counters()
        # Only simulations still in flight: the file stays small however large the study.
        received = {str(sim): c["messages"] for sim, c in counters["simulations"].items()
                    if sim not in finished}
        write_json(self.files.progress(self.rank),
                   {"finished": len(finished), "received": received,
                    "dropped": counters["dropped"]})

    def study_over(self) -> dict[str, Any] | None:
        """The launcher's stop file once every simulation it lists as completed has all of its
        data here (or the shutdown timeout has passed); None before."""
        stop = read_json(self.files.stop)
        if stop is None:
            return None
        now = time.monotonic()
        self._stop_seen = self._stop_seen or now
        missing = set(stop["completed"]) - set(self.receiver.finished_simulations())
        if not missing:
            return dict(stop)
        if now - self._stop_seen > self.shutdown_timeout:
            log.error("simulations %s completed but their data never fully arrived here; what "
                      "did arrive is used", sorted(missing))
            return dict(stop)
        return None
