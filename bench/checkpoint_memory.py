# SPDX-License-Identifier: BSD-3-Clause
"""Peak memory of a statistics server rank while it saves a checkpoint and takes it up again,
against its state.

    python bench/checkpoint_memory.py [--cells 1000000] [--steps 8]

One rank's receiver and statistics (moments to order 4, min and max, 2 thresholds, 3 quantiles)
take one simulation of --steps time steps of a field of --cells cells from a client in a child
process; then the rank saves its checkpoint as the server does (melissa.server.statistics
.Checkpoints.save), and a fresh receiver and statistics take it up as a resumed server does
(Checkpoints.resume). For each: the state (every state array of every (field, time step)), the
rank's resident memory before, and how much it grew at its peak: all of it (VmHWM, reset just
before), and its anonymous part alone (RssAnon, sampled every millisecond while the work runs
without the GIL), which, unlike a file's pages mapped for reading, the kernel cannot drop.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

TOKEN = 0x5EED
FIELD = "temperature"
MIB = 2**20


def memory(key: str) -> int:
    """Bytes of /proc/self/status's `key`."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


def peaks(work: Callable[[], None]) -> tuple[int, int, int, float]:
    """(resident before, growth at the peak, anonymous growth at the peak, seconds) of work()."""
    before, anonymous = memory("VmRSS"), memory("RssAnon")
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM from here on
    highest, done = [anonymous], threading.Event()

    def sample() -> None:
        while not done.wait(0.001):
            highest[0] = max(highest[0], memory("RssAnon"))

    sampler = threading.Thread(target=sample)
    sampler.start()
    started = time.perf_counter()
    try:
        work()
    finally:
        seconds = time.perf_counter() - started
        done.set()
        sampler.join()
    return before, memory("VmHWM") - before, highest[0] - anonymous, seconds


def client(steps: int, cells: int) -> None:
    from melissa import client as melissa_client

    melissa_client.init(FIELD, cells, None)
    rng = np.random.default_rng(0)
    for _ in range(steps):
        melissa_client.send(FIELD, rng.standard_normal(cells))
    melissa_client.finalize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=1_000_000)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        client(args.steps, args.cells)
        return

    from melissa import _core
    from melissa.server.statistics import Checkpoints
    from melissa.study_files import StudyFiles

    def server(work: str) -> tuple[_core.Receiver, Checkpoints]:
        statistics = _core.FieldStatistics(moments_order=4, extrema=True, thresholds=[0.0, 1.0],
                                           probabilities=[0.05, 0.5, 0.95])
        receiver = _core.Receiver([FIELD], TOKEN, 0, 1, "cells", socket.gethostname(), work, 8,
                                  statistics, bind_address="127.0.0.1",
                                  field_sizes=[args.cells], nb_time_steps=args.steps)
        return receiver, Checkpoints(receiver, statistics, StudyFiles(work), 0, 0.0)

    rows = []
    with tempfile.TemporaryDirectory() as work:
        receiver, checkpoints = server(work)
        try:
            address = receiver.serve_handshakes([receiver.endpoint])
            env = {**os.environ, "MELISSA_SERVER_ADDRESS": address,
                   "MELISSA_SIMULATION_ID": "0", "MELISSA_STUDY_TOKEN": f"{TOKEN:016x}",
                   "MELISSA_TIMEOUT": "60"}
            subprocess.run([sys.executable, __file__, "--client", "--cells", str(args.cells),
                            "--steps", str(args.steps)], env=env, check=True)
            while receiver.finished_simulations() != [0]:
                time.sleep(0.05)
            statistics = checkpoints.consumer
            state = sum(array.nbytes for field, step, _, _ in statistics.pieces()
                        for arrays in statistics.state(field, step).values()
                        for array in arrays.values())
            rows.append(("saving a checkpoint", *peaks(checkpoints.save)))
        finally:
            receiver.stop()
        del receiver, checkpoints, statistics
        size = StudyFiles(work).statistics_checkpoint(0).stat().st_size

        receiver, checkpoints = server(work)
        try:
            rows.append(("taking it up", *peaks(checkpoints.resume)))
            assert receiver.finished_simulations() == [0]
        finally:
            receiver.stop()

    print(f"State {state / MIB:.0f} MiB, checkpoint {size / MIB:.0f} MiB.\n")
    print("| | resident before | growth at the peak | anonymous growth at the peak "
          "| anonymous growth / state | seconds |")
    print("|---|---|---|---|---|---|")
    for what, before, growth, anonymous, seconds in rows:
        print(f"| {what} | {before / MIB:.0f} MiB | {growth / MIB:.0f} MiB "
              f"| {anonymous / MIB:.0f} MiB | {anonymous / state:.2f} | {seconds:.1f} |")


if __name__ == "__main__":
    main()
