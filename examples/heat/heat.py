# SPDX-License-Identifier: BSD-3-Clause
"""The 2D heat equation u_t = alpha (u_xx + u_yy) on the unit square, instrumented with melissa:
the same solver as heat.c (see there for the scheme, the decomposition and the output), with the
same command line and exit statuses, in NumPy and mpi4py.

    python heat.py [--nx N] [--ny N] [--steps N] [--alpha A] [--field-name NAME]
                   [--write-fields DIR] [--no-melissa] INITIAL LEFT RIGHT BOTTOM TOP

The numerics are the class Grid, which legacy/heat_legacy.py imports; the rest is the command
line, the output and the calls to melissa.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn

import numpy as np
from mpi4py import MPI

from melissa import client

COMM = MPI.COMM_WORLD
USAGE = """\
usage: heat.py [--nx N] [--ny N] [--steps N] [--alpha A] [--field-name NAME]
               [--write-fields DIR] [--no-melissa] INITIAL LEFT RIGHT BOTTOM TOP"""


@dataclass
class Options:
    nx: int = 40
    ny: int = 40
    steps: int = 20
    alpha: float = 1.0
    field_name: str = "temperature"
    write_fields: str | None = None  # None: no files
    use_melissa: bool = True
    temperatures: tuple[float, ...] = ()  # initial, left, right, bottom, top


class UsageError(ValueError):
    pass


def _converter(kind: Callable[[str], Any], test: Callable[[Any], bool],
               what: str) -> Callable[[str, str], Any]:
    """Converts an argument to `kind` where it passes `test`, else says it needs `what`."""
    def convert(text: str, name: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not test(value):
            raise UsageError(f"{name} needs {what}")
        return value
    return convert


_positive_int = _converter(int, lambda v: v > 0, "a positive integer")
_finite = _converter(float, math.isfinite, "a finite number")
_positive = _converter(float, lambda v: math.isfinite(v) and v > 0, "a positive number")
_directory = _converter(str, bool, "a directory")

# The options that take a value: the Options field each sets, and its conversion.
VALUE_OPTIONS = {"--nx": ("nx", _positive_int), "--ny": ("ny", _positive_int),
                 "--steps": ("steps", _positive_int), "--alpha": ("alpha", _positive),
                 "--field-name": ("field_name", lambda text, name: text),
                 "--write-fields": ("write_fields", _directory)}


def parse(argv: list[str]) -> Options:
    """Raises UsageError. As heat.c: options first, since the launcher appends the parameters,
    which may be negative numbers such as -1e-05 (which argparse would take for an option)."""
    options = Options()
    i = 0
    while i < len(argv) and argv[i].startswith("--"):
        name = argv[i]
        i += 1
        if name == "--":
            break
        if name == "--no-melissa":
            options.use_melissa = False
            continue
        if name not in VALUE_OPTIONS:
            raise UsageError("unknown option")
        if i == len(argv):
            raise UsageError("an option lacks its value")
        field, convert = VALUE_OPTIONS[name]
        setattr(options, field, convert(argv[i], name))
        i += 1
    if len(argv) - i != 5:
        raise UsageError("expected 5 temperatures: INITIAL LEFT RIGHT BOTTOM TOP")
    options.temperatures = tuple(_finite(text, "each temperature") for text in argv[i:])
    # Gatherv counts and melissa's sizes are C ints.
    if options.nx * options.ny > 2**31 - 1:
        raise UsageError("nx * ny must be below 2^31")
    return options


def fail(what: str, why: object) -> NoReturn:
    """A failure on one rank must not leave the others waiting in a collective call."""
    # One write, so that the lines of two failing ranks do not interleave.
    sys.stderr.write(f"heat.py rank {COMM.rank}: {what}: {why}\n")
    sys.stderr.flush()
    COMM.Abort(1)
    raise SystemExit(1)  # not reached: Abort ends every rank


def melissa_call(name: str, function: Callable[..., None], *args: object) -> None:
    try:
        function(*args)
    except client.ClientError as error:
        fail(name, error)


def first_row(rank: int, n_ranks: int, ny: int) -> int:
    return rank * ny // n_ranks


class Grid:
    """One MPI rank's block of an nx x ny grid decomposed over comm; `temperatures` are the
    initial, left, right, bottom and top ones. heat_numerics.c in NumPy: u[j, i] is row j, column
    i, with halo or boundary rows 0 and rows + 1 and boundary columns 0 and nx + 1."""

    def __init__(self, nx: int, ny: int, alpha: float, temperatures: tuple[float, ...],
                 comm: MPI.Comm) -> None:
        initial, left, right, bottom, top = temperatures
        rank, n_ranks = comm.rank, comm.size
        self.comm, self.nx = comm, nx
        self.rows = first_row(rank + 1, n_ranks, ny) - first_row(rank, n_ranks, ny)
        self.below = rank - 1 if rank > 0 else MPI.PROC_NULL
        self.above = rank + 1 if rank < n_ranks - 1 else MPI.PROC_NULL

        hx, hy = 1.0 / (nx + 1), 1.0 / (ny + 1)
        h = min(hx, hy)
        dt = 0.2 * h * h / alpha
        self.rx, self.ry = alpha * dt / (hx * hx), alpha * dt / (hy * hy)

        # Both arrays hold the boundary values, so swapping them keeps them.
        self.u = np.full((self.rows + 2, nx + 2), initial)
        if self.below == MPI.PROC_NULL:
            self.u[0, :] = bottom
        if self.above == MPI.PROC_NULL:
            self.u[self.rows + 1, :] = top
        self.u[:, 0] = left
        self.u[:, nx + 1] = right
        self.new = self.u.copy()

    def step(self) -> None:
        """The halo exchange, then the explicit update of every interior point (collective)."""
        u, new, rows, comm = self.u, self.new, self.rows, self.comm
        # My first row to the rank below, whose top halo it is; my last row to the rank above.
        comm.Sendrecv(u[1, 1:-1], self.below, 0, u[rows + 1, 1:-1], self.above, 0)
        comm.Sendrecv(u[rows, 1:-1], self.above, 1, u[0, 1:-1], self.below, 1)
        # The operations in this order in all three languages, for the same rounding.
        c = u[1:-1, 1:-1]
        new[1:-1, 1:-1] = (c + self.rx * (u[1:-1, :-2] - 2.0 * c + u[1:-1, 2:])
                           + self.ry * (u[:-2, 1:-1] - 2.0 * c + u[2:, 1:-1]))
        self.u, self.new = new, u

    def cells(self) -> np.ndarray:
        """This rank's interior values, row after row: the ranks' cells, in rank order, make the
        row-major field."""
        return np.ascontiguousarray(self.u[1:-1, 1:-1]).reshape(-1)


def run(options: Options) -> None:
    nx, ny = options.nx, options.ny
    rank, n_ranks = COMM.rank, COMM.size
    grid = Grid(nx, ny, options.alpha, options.temperatures, COMM)

    # Rank 0 gathers the whole field for --write-fields; every rank knows the decomposition.
    field = np.empty(nx * ny) if options.write_fields is not None and rank == 0 else None
    gather = None
    if field is not None:
        starts = [first_row(r, n_ranks, ny) * nx for r in range(n_ranks + 1)]
        gather = [field, np.diff(starts), starts[:-1], MPI.DOUBLE]

    if options.use_melissa:
        melissa_call("melissa_init", client.init, options.field_name, grid.rows * nx, COMM)

    for step in range(options.steps):
        grid.step()
        cells = grid.cells()
        if options.use_melissa:
            melissa_call("melissa_send", client.send, options.field_name, cells)
        if options.write_fields is not None:
            COMM.Gatherv(cells, gather, root=0)
            if field is not None:
                path = f"{options.write_fields}/step-{step:04d}.bin"
                try:
                    field.astype("<f8").tofile(path)
                except OSError as error:
                    fail(path, error.strerror)

    if options.use_melissa:
        melissa_call("melissa_finalize", client.finalize)


def main() -> int:
    # Every rank sees the same command line, so every rank takes the same way out.
    try:
        options = parse(sys.argv[1:])
        if options.ny < COMM.size:
            raise UsageError("ny must be at least the number of MPI ranks")
    except UsageError as error:
        if COMM.rank == 0:
            print(f"heat.py: {error}\n{USAGE}", file=sys.stderr)
        return 2
    run(options)
    return 0


if __name__ == "__main__":
    sys.exit(main())
