# SPDX-License-Identifier: BSD-3-Clause
"""A test server: every rank receives, checks every value it is handed and writes a report.

    mpirun -np M python collect_server.py --fields a,b --token HEX --routing cells \
        --simulations 0 1 --address-file ADDR --report-dir DIR [--deadline S] \
        [--field-sizes N,N --nb-time-steps T] [--transport zmq|ucx]

Rank 0 writes the clients' MELISSA_SERVER_ADDRESS, with every rank's data endpoints and what the
study declares, to ADDR as JSON (atomically, so that a test polling for it never reads half a
file). Each rank then
pops deliveries until every simulation of --simulations is finished on it (or the deadline
passes) and writes DIR/report.<rank>.json. The checks need the data, so they are made here:

* every value equals the solvers' formula (see solver.c) for its simulation, field, time step
  and global cell;
* a delivery holds exactly the cells this rank owns ("cells": its share of the field; whole
  routings: the whole field, and only for the simulations or time steps routed to this rank);
* no (simulation, field, time step) is delivered twice.

Which time steps should have arrived is left to the test, which knows the scenario: the report
lists what did. DIR/first-delivery.<rank> appears when the rank is handed its first delivery, so
that a test can kill the server mid-run. The report gives the rank's resident memory once it
listens and its peak at the end, so that a test can bound what rogue peers cost it.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
from mpi4py import MPI

from melissa import _core
from melissa.server import open_receiver

MAX_ERRORS = 20  # enough to see a pattern, not so many that the report drowns it


def expected_values(simulation: int, field: int, step: int, first: int, count: int) -> np.ndarray:
    return simulation * 1e6 + field * 1e5 + step * 1e3 + np.arange(first, first + count,
                                                                     dtype=np.float64)


def memory_kb(field: str) -> int:
    """VmRSS (resident now) or VmHWM (peak resident) of this process, in kB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise LookupError(field)


def write_atomically(path: Path, data: Any) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(data, indent=1, sort_keys=True))
    os.replace(temporary, path)


class Checker:
    """What one rank was handed, and what was wrong with it."""

    def __init__(self, rank: int, n_ranks: int, routing: str, receiver: _core.Receiver) -> None:
        self.rank, self.n_ranks, self.routing = rank, n_ranks, routing
        self.receiver = receiver
        self.seen: dict[tuple[int, int], list[int]] = {}  # (simulation, field) -> time steps
        self.dtypes: dict[tuple[int, int], set[str]] = {}
        self.ranges: dict[int, set[tuple[int, int]]] = {}  # field -> (offset, count) delivered
        self.errors: list[str] = []
        self.n_errors = 0
        self.deliveries = 0

    def error(self, text: str) -> None:
        self.n_errors += 1
        if len(self.errors) < MAX_ERRORS:
            self.errors.append(text)

    def check(self, simulation: int, field: int, step: int, offset: int,
              values: np.ndarray) -> None:
        self.deliveries += 1
        what = f"rank {self.rank}: simulation {simulation} field {field} time step {step}"
        key = (simulation, field)
        steps = self.seen.setdefault(key, [])
        if step in steps:
            self.error(f"{what}: delivered twice")
        steps.append(step)
        self.dtypes.setdefault(key, set()).add(str(values.dtype))
        self.ranges.setdefault(field, set()).add((offset, len(values)))

        size = self.receiver.field_sizes().get(field)
        if size is None:
            self.error(f"{what}: the receiver knows no size for field {field}")
            return
        if self.routing == "cells":
            begin = size * self.rank // self.n_ranks
            end = size * (self.rank + 1) // self.n_ranks
        else:
            begin, end = 0, size
            key_value = simulation if self.routing == "whole_by_simulation" else step
            if key_value % self.n_ranks != self.rank:
                self.error(f"{what}: routed here by {self.routing}, but "
                           f"{key_value} % {self.n_ranks} != {self.rank}")
        if (offset, len(values)) != (begin, end - begin):
            self.error(f"{what}: got cells [{offset}, {offset + len(values)}), this rank owns "
                       f"[{begin}, {end}) of {size}")
        expected = expected_values(simulation, field, step, offset, len(values))
        wrong = np.flatnonzero(values.astype(np.float64) != expected)
        for i in wrong[:3]:
            self.error(f"{what}: cell {offset + i} holds {float(values[i])!r}, "
                       f"expected {float(expected[i])!r}")
        if len(wrong) > 3:
            self.error(f"{what}: {len(wrong) - 3} more wrong values")

    def report(self) -> dict[str, Any]:
        return {
            "deliveries": self.deliveries,
            "errors": self.errors,
            "n_errors": self.n_errors,
            "received": {f"{s}/{f}": sorted(steps) for (s, f), steps in self.seen.items()},
            "dtypes": {f"{s}/{f}": sorted(d) for (s, f), d in self.dtypes.items()},
            "ranges": {str(f): sorted(r) for f, r in self.ranges.items()},
        }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--fields", required=True)
    parser.add_argument("--token", required=True, help="hexadecimal")
    parser.add_argument("--routing", default="cells")
    parser.add_argument("--simulations", type=int, nargs="*", default=[])
    parser.add_argument("--address-file", type=Path, required=True)
    parser.add_argument("--report-dir", type=Path, required=True)
    parser.add_argument("--deadline", type=float, default=30.0, help="seconds")
    parser.add_argument("--field-sizes", help="the cells of each field, declared")
    parser.add_argument("--nb-time-steps", type=int, default=0, help="declared")
    parser.add_argument("--transport", default="zmq", help="what carries data: zmq or ucx")
    args = parser.parse_args()

    comm = MPI.COMM_WORLD
    collector = _core.Collector(64)
    fields = args.fields.split(",")
    field_sizes = [int(n) for n in args.field_sizes.split(",")] if args.field_sizes else None
    receiver, address = open_receiver(comm, fields, int(args.token, 16), collector,
                                      routing=args.routing, field_sizes=field_sizes,
                                      nb_time_steps=args.nb_time_steps, transport=args.transport)
    layout = comm.allgather(receiver.endpoint)
    rss_at_start = memory_kb("VmRSS")
    if comm.rank == 0:
        write_atomically(args.address_file, {
            "address": address, "layout": layout, "routing": args.routing, "fields": fields,
            "field_sizes": field_sizes, "nb_time_steps": args.nb_time_steps})

    checker = Checker(comm.rank, comm.size, args.routing, receiver)
    expected = set(args.simulations)
    deadline = time.monotonic() + args.deadline
    timed_out = False
    while True:
        delivery = collector.pop(0.05)
        if delivery is not None:
            if checker.deliveries == 0:
                (args.report_dir / f"first-delivery.{comm.rank}").touch()
            checker.check(*delivery)
            continue
        # A simulation is marked finished only after its last delivery went into the collector:
        # once all are finished, what is left to pop is in the collector already.
        if expected <= set(receiver.finished_simulations()):
            while (delivery := collector.pop(0)) is not None:
                checker.check(*delivery)
            break
        if time.monotonic() > deadline:
            timed_out = True
            break
    receiver.stop()

    report = checker.report()
    report.update(
        rank=comm.rank,
        n_ranks=comm.size,
        routing=args.routing,
        timed_out=timed_out,
        finished=sorted(receiver.finished_simulations()),
        counters=receiver.counters(),
        field_sizes={str(f): s for f, s in receiver.field_sizes().items()},
        rss_at_start_kb=rss_at_start,
        peak_rss_kb=memory_kb("VmHWM"),
    )
    write_atomically(args.report_dir / f"report.{comm.rank}.json", report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
