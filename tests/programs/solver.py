# SPDX-License-Identifier: BSD-3-Clause
"""A test solver in Python, the same as solver.c (see there for the values and exit statuses):

    python solver.py FIELDS STEPS CELLS [--float] [--no-mpi]

With --no-mpi it never imports mpi4py and initializes with comm=None.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

from melissa import client


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("fields")
    parser.add_argument("steps", type=int)
    parser.add_argument("cells")
    parser.add_argument("--float", action="store_true")
    parser.add_argument("--no-mpi", action="store_true")
    args = parser.parse_args()

    comm = None
    rank, size = 0, 1
    if not args.no_mpi:
        from mpi4py import MPI

        comm = MPI.COMM_WORLD
        rank, size = comm.rank, comm.size
    cells = [int(c) for c in args.cells.split(",")]
    if len(cells) != size:
        parser.error("CELLS must list one count per rank")
    local, offset = cells[rank], sum(cells[:rank])
    simulation = int(os.environ.get("MELISSA_SIMULATION_ID", "0"))
    dtype = np.float32 if args.float else np.float64
    fields = args.fields.split(",")
    cell_ids = np.arange(offset, offset + local, dtype=np.float64)

    call = ""
    try:
        for name in fields:
            call = f"init({name!r})"
            client.init(name, local, comm)
        for t in range(args.steps):
            for f, name in enumerate(fields):
                call = f"send({name!r})"
                client.send(name, (simulation * 1e6 + f * 1e5 + t * 1e3 + cell_ids).astype(dtype))
        call = "finalize()"
        client.finalize()
    except client.ClientError as e:
        print(f"solver rank {rank}: {call} failed with code {e.code} ({e.kind}): {e}",
              file=sys.stderr, flush=True)
        # At once, as solver.c: no MPI finalization that could wait for the other ranks.
        os._exit(10 + e.code)
    return 0


if __name__ == "__main__":
    sys.exit(main())
