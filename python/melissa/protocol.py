# SPDX-License-Identifier: BSD-3-Clause
"""Every message between the launcher and the servers of a study, in one place.

They travel as small JSON files under OUTPUT_DIR/.melissa/ (a shared file system is all the two
need, on a laptop as on a cluster), each written whole and renamed, each tagged with the
protocol's schema version: a server of another melissa version is refused with a clear message
instead of misreading a key.

    launcher.json   LauncherHeartbeat   the launcher, every second; also the study's lock
    study.json      StudyDescription    the launcher, before it starts a server
    server.json     ServerAnnouncement  server rank 0, once it takes connections
    progress-N.json RankProgress        server rank N, every second: its heartbeat
    stop.json       StopRequest         the launcher, once no simulation runs
    parameters.json DrawnParameters     the launcher, before it starts simulations drawn while
                                        the study runs (active sampling)
    losses-N.json   SimulationLosses    training server rank N, every second with active
                                        sampling: the loss of each simulation it trains on
"""

from __future__ import annotations

import bisect
import contextlib
import dataclasses
import functools
import os
import secrets
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from melissa.study_files import read_json, write_json

SCHEMA_VERSION = 1

# How a server rank ends, besides 0 (results written) and 1 (it failed).
# Stopped after a final checkpoint, without results: its launcher is gone (nobody would read
# them), or it was told to stop (SIGTERM) to be restarted.
EXIT_STOPPED = 3
EXIT_RESULTS_UNWRITABLE = 4  # the final checkpoint holds everything; `--resume` writes them

Message = TypeVar("Message", bound="_Message")


class ProtocolError(RuntimeError):
    """A message file of another protocol version, or not one at all."""


@dataclass(frozen=True)
class _Message:
    kind: ClassVar[str]

    def write(self, path: Path) -> None:
        write_json(path, {"schema": SCHEMA_VERSION, "kind": self.kind,
                          **dataclasses.asdict(self)})

    @classmethod
    def read(cls: type[Message], path: Path) -> Message | None:
        """The message, or None while the file does not exist."""
        data = read_json(path)
        if data is None:
            return None
        if not isinstance(data, dict) or data.get("kind") != cls.kind:
            raise ProtocolError(f"{path} is not a melissa {cls.kind} message")
        if data.get("schema") != SCHEMA_VERSION:
            raise ProtocolError(f"{path} was written by a melissa speaking protocol version "
                                f"{data.get('schema')}, this one speaks {SCHEMA_VERSION}: run "
                                "the launcher and the servers from the same installation")
        try:
            return cls(**{f.name: data[f.name] for f in dataclasses.fields(cls)})
        except KeyError as missing:
            raise ProtocolError(f"{path} lacks {missing}") from None


@dataclass(frozen=True)
class LauncherHeartbeat(_Message):
    kind = "launcher"
    pid: int
    host: str
    time: float  # time.time() of the last beat

    @classmethod
    def now(cls) -> LauncherHeartbeat:
        return cls(os.getpid(), socket.gethostname(), time.time())

    def alive(self, silence: float) -> bool:
        """Whether the launcher still runs: its process, seen from its own host; anywhere, a
        beat within the last `silence` seconds."""
        if self.host == socket.gethostname() and not process_alive(self.pid):
            return False
        return time.time() - self.time < silence


@dataclass(frozen=True)
class StudyDescription(_Message):
    kind = "study"
    config: dict[str, Any]
    token: str  # 16 hex digits
    parameters: list[list[float]]
    config_dir: str
    resume: bool  # take up the checkpoints
    bind_address: str  # the interface the server listens on; empty: its host name's


@dataclass(frozen=True)
class ServerAnnouncement(_Message):
    kind = "server"
    address: str
    pids: list[int]  # by rank
    hosts: list[str]

    def alive_ranks(self) -> list[int]:
        """Ranks whose process runs on this host (those elsewhere cannot be seen from here)."""
        here = socket.gethostname()
        return [rank for rank, (pid, host) in enumerate(zip(self.pids, self.hosts, strict=True))
                if host == here and process_alive(pid)]


@dataclass(frozen=True)
class RankProgress(_Message):
    kind = "progress"
    rank: int
    time: float  # time.time() when written
    finished: list[list[int]]  # simulations held whole, as [first, last] ranges
    # (simulation, messages received, time steps delivered) of those still in flight
    in_flight: list[list[int]] = field(default_factory=list)
    dropped: dict[str, int] = field(default_factory=dict)
    # What the server's work says so far, for the launcher's display and decisions: the Sobol
    # intervals' widths of a statistics server, the losses of a training server.
    metrics: dict[str, Any] = field(default_factory=dict)

    def finished_set(self) -> set[int]:
        return {sim for first, last in self.finished for sim in range(first, last + 1)}

    # The launcher asks these of every running simulation at every pass: with thousands
    # running, a scan of the lists each time would make a pass cost their square.
    def holds(self, sim: int) -> bool:
        """Whether this rank holds the simulation whole."""
        index = bisect.bisect_right(self._firsts, sim) - 1
        return index >= 0 and sim <= self.finished[index][1]

    def delivered(self, sim: int) -> tuple[int, int]:
        """(Messages received, time steps delivered) of a simulation in flight; zeros if none."""
        return self._in_flight.get(sim, (0, 0))

    @functools.cached_property
    def _firsts(self) -> list[int]:
        return [first for first, _ in self.finished]

    @functools.cached_property
    def _in_flight(self) -> dict[int, tuple[int, int]]:
        return {sim: (messages, steps) for sim, messages, steps in self.in_flight}


@dataclass(frozen=True)
class StopRequest(_Message):
    kind = "stop"
    completed: list[int]  # confirmed complete in this server's lifetime: it waits for them
    completed_before: list[int]  # complete in the checkpoint it resumed from
    statuses: list[str]  # of every simulation, by id: completed, failed, dropped, not_run
    parameters: list[list[float]]  # of every simulation, redrawn Sobol groups included
    write_results: bool = True  # False: the study is abandoned, nothing must block a re-run
    # Global attributes of results.nc that only the launcher knows (how the study ended).
    attributes: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DrawnParameters(_Message):
    kind = "parameters"
    parameters: list[list[float]]  # of every simulation drawn so far, by id


@dataclass(frozen=True)
class SimulationLosses(_Message):
    kind = "losses"
    rank: int
    # By simulation id (JSON keys are text): the exponential average of the training loss of
    # its samples on this rank, and how many of its samples that average took.
    losses: dict[str, float]
    samples: dict[str, int]

    @staticmethod
    def combine(reports: Iterable[SimulationLosses | None]) -> dict[int, float]:
        """Each simulation's loss over the ranks, each rank's weighted by its samples (the
        ranks hold different time steps of one simulation)."""
        totals: dict[int, list[float]] = {}
        for report in reports:
            if report is None:
                continue
            for sim, loss in report.losses.items():
                weight = report.samples[sim]
                total = totals.setdefault(int(sim), [0.0, 0.0])
                total[0] += loss * weight
                total[1] += weight
        return {sim: loss / weight for sim, (loss, weight) in totals.items() if weight > 0}


def study_token() -> int:
    """A fresh random study token; clients get it as 16 hex digits in MELISSA_STUDY_TOKEN."""
    return secrets.randbits(64)


def ranges(ids: Iterable[int]) -> list[list[int]]:
    """[first, last] runs of consecutive ids: simulations finish nearly in order, so a study of
    any size fits in a few of them."""
    out: list[list[int]] = []
    for sim in sorted(ids):
        if out and out[-1][1] == sim - 1:
            out[-1][1] = sim
        else:
            out.append([sim, sim])
    return out


def process_alive(pid: int) -> bool:
    """Whether a process of this host runs (a zombie, dead but not yet reaped, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError):
        # After the command name, which may hold spaces and parentheses: the state.
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    return True
