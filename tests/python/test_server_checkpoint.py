# SPDX-License-Identifier: BSD-3-Clause
"""A statistics server rank's checkpoint through the Python API: the bytes a receiver writes,
taken up by a fresh receiver and statistics, give back the same state; what they say of
themselves, for the launcher; the refusals, as ValueError; and a checkpoint the disk does not
take, which leaves the previous one whole."""

from __future__ import annotations

import errno
import logging
import resource
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import PROGRAMS, Processes

from melissa import _core
from melissa.server.statistics import Checkpoints
from melissa.study_files import StudyFiles

TOKEN = 0x5EED
FIELDS = ["temperature", "pressure"]


@contextmanager
def statistics_server(fields: list[str] = FIELDS) -> Iterator[
        tuple[_core.Receiver, _core.FieldStatistics]]:
    statistics = _core.FieldStatistics(moments_order=2, extrema=True, thresholds=[1e5],
                                       probabilities=[0.5], sobol_params=1)
    with tempfile.TemporaryDirectory() as ipc_dir:
        receiver = _core.Receiver(fields, TOKEN, 0, 1, "cells", socket.gethostname(), ipc_dir,
                                  8, statistics, bind_address="127.0.0.1")
        try:
            yield receiver, statistics
        finally:
            receiver.stop()


def every_state(statistics: _core.FieldStatistics) -> list[tuple[Any, ...]]:
    """(field, time step, offset, cells, kernel states) of every (field, time step)."""
    return [(*piece, statistics.state(*piece[:2])) for piece in statistics.pieces()]


def checkpoint(receiver: _core.Receiver, statistics: _core.FieldStatistics) -> tuple[
        dict[str, Any], bytes]:
    """What receiver.checkpoint says of the checkpoint it writes to a file, and the file."""
    with tempfile.TemporaryFile() as file:
        written = receiver.checkpoint(statistics, file.fileno())
        file.seek(0)
        return written, file.read()


def run_simulations(receiver: _core.Receiver, simulations: tuple[int, ...],
                    processes: Processes) -> None:
    address = receiver.serve_handshakes([receiver.endpoint])
    for simulation in simulations:
        env = {"MELISSA_SERVER_ADDRESS": address, "MELISSA_SIMULATION_ID": str(simulation),
               "MELISSA_STUDY_TOKEN": f"{TOKEN:016x}", "MELISSA_TIMEOUT": "10"}
        done = processes.run([sys.executable, str(PROGRAMS / "solver.py"), ",".join(FIELDS),
                              "3", "6", "--no-mpi"], env)
        assert done.returncode == 0, str(done)
    deadline = time.monotonic() + 10
    while receiver.finished_simulations() != list(simulations):
        assert time.monotonic() < deadline, receiver.finished_simulations()
        time.sleep(0.02)


def test_checkpoint_round_trip(processes: Processes) -> None:
    with statistics_server() as (receiver, statistics):
        # Simulations 0 and 1, two of the three members of Sobol group 0: it stays in flight.
        run_simulations(receiver, (0, 1), processes)
        written, data = checkpoint(receiver, statistics)
        states = every_state(statistics)
        assert statistics.pending_groups() == 6  # a group per (field, time step)

    assert written == _core.checkpoint_summary(data) == {
        "version": _core.CHECKPOINT_VERSION, "rank": 0, "n_ranks": 1, "field_names": FIELDS,
        "finished": [0, 1], "size": len(data)}

    with statistics_server() as (receiver, statistics):
        receiver.restore_checkpoint(statistics, data)
        assert checkpoint(receiver, statistics)[1] == data
        assert receiver.finished_simulations() == [0, 1]
        assert statistics.pending_groups() == 6
        restored = every_state(statistics)
    assert [s[:4] for s in restored] == [s[:4] for s in states]
    for (*_, got), (*_, saved) in zip(restored, states, strict=True):
        assert got.keys() == saved.keys()
        for kernel in saved:
            for name, array in saved[kernel].items():
                np.testing.assert_array_equal(got[kernel][name], array, f"{kernel}.{name}")

    with statistics_server() as (receiver, statistics):
        with pytest.raises(ValueError, match=r"^checkpoint truncated: \d+ of its \d+ bytes$"):
            receiver.restore_checkpoint(statistics, data[:-1])
        assert statistics.pieces() == [], "a refused checkpoint changes nothing"
    with statistics_server(["temperature", "humidity"]) as (receiver, statistics):
        with pytest.raises(ValueError, match="checkpoint of another study: its fields are "
                                             "'temperature', 'pressure', this study's "
                                             "'temperature', 'humidity'"):
            receiver.restore_checkpoint(statistics, data)
    version = _core.CHECKPOINT_VERSION
    newer = data[:8] + (version + 1).to_bytes(4, "little") + data[12:]
    with pytest.raises(ValueError, match=rf"written by a newer melissa \(format {version + 1}, "
                                         rf"this one reads up to {version}\)"):
        _core.checkpoint_summary(newer)
    with pytest.raises(ValueError, match="not a melissa checkpoint"):
        _core.checkpoint_summary(b"\x80\x05pickle")


def test_checkpoint_the_disk_does_not_take_leaves_the_previous_one(
        processes: Processes, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Cut short by a full disk, a checkpoint raises OSError; saved as the server saves it, it
    leaves the previous checkpoint whole and no temporary file, and the next one is taken, and
    taken up."""
    with statistics_server() as (receiver, statistics):
        with open("/dev/full", "wb") as full:
            with pytest.raises(OSError, match=r"No space left on device") as raised:
                receiver.checkpoint(statistics, full.fileno())
        assert raised.value.errno == errno.ENOSPC

        checkpoints = Checkpoints(receiver, statistics, StudyFiles(tmp_path), 0, 0.0)
        checkpoints.save()
        saved = checkpoints.path.read_bytes()
        run_simulations(receiver, (0,), processes)  # the next checkpoint is larger
        # The file size limit stands for the full disk: writes past it fail with EFBIG.
        limit = resource.getrlimit(resource.RLIMIT_FSIZE)
        handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (len(saved), limit[1]))
        try:
            with caplog.at_level(logging.ERROR, logger="melissa.server"):
                checkpoints.save()
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, limit)
            signal.signal(signal.SIGXFSZ, handler)
        assert "checkpoint not written ([Errno 27] File too large); the previous one is kept" \
            in caplog.text
        assert checkpoints.path.read_bytes() == saved
        assert list(checkpoints.path.parent.iterdir()) == [checkpoints.path]

        checkpoints.save()
        assert _core.checkpoint_summary(checkpoints.path.read_bytes())["finished"] == [0]

    with statistics_server() as (receiver, statistics):
        Checkpoints(receiver, statistics, StudyFiles(tmp_path), 0, 0.0).resume()  # mapped
        assert receiver.finished_simulations() == [0]
