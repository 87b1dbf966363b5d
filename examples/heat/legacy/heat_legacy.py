# SPDX-License-Identifier: BSD-3-Clause
"""heat.py's solver written the way a solver instrumented for Inria's Melissa is: Melissa's
module melissa_api, whose calls return nothing and end the program on failure, parameters read
from the command line without checks, and the work done on the ranks of this program alone.

    python heat_legacy.py NX NY STEPS INITIAL LEFT RIGHT BOTTOM TOP

The launcher appends the five temperatures to the study's executable_command, here
"python heat_legacy.py NX NY STEPS". The fields equal heat.py's (and heat_c's) with --nx NX
--ny NY --steps STEPS.
"""

from __future__ import annotations

import sys
from pathlib import Path

from melissa_api import melissa_finalize, melissa_init, melissa_send
from mpi4py import MPI

# The numerics are heat.py's, one directory up.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from heat import Grid  # noqa: E402


def main() -> int:
    if len(sys.argv) != 9:
        if MPI.COMM_WORLD.rank == 0:
            print("usage: heat_legacy.py NX NY STEPS INITIAL LEFT RIGHT BOTTOM TOP",
                  file=sys.stderr)
        return 2
    nx, ny, steps = (int(text) for text in sys.argv[1:4])
    temperatures = tuple(float(text) for text in sys.argv[4:])

    # Melissa's solvers may run coupled with other programs in one MPI job (mpirun A : B), which
    # mpirun numbers in MPI_APPNUM: the solver works on its own program's ranks. A program
    # started without mpirun has no number; it is then the only one.
    world = MPI.COMM_WORLD
    appnum = world.Get_attr(MPI.APPNUM)
    comm = world.Split(0 if appnum is None else appnum, world.rank)

    grid = Grid(nx, ny, 1.0, temperatures, comm)
    melissa_init("temperature", grid.rows * nx, comm)
    for _ in range(steps):
        grid.step()
        melissa_send("temperature", grid.cells())
    melissa_finalize()
    comm.Free()
    return 0


if __name__ == "__main__":
    sys.exit(main())
