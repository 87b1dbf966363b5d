# SPDX-License-Identifier: BSD-3-Clause
"""The 2D heat equation u_t = alpha (u_xx + u_yy) on the unit square, instrumented with melissa:
the same solver as heat.c (see there for the scheme, the decomposition and the output), with the
same command line and exit statuses, in NumPy and mpi4py.

    python heat.py [--nx N] [--ny N] [--steps N] [--alpha A] [--field-name NAME]
                   [--write-fields DIR] [--no-melissa] INITIAL LEFT RIGHT BOTTOM TOP

u[j, i] is row j, column i, with halo or boundary rows 0 and rows + 1 and boundary columns 0 and
nx + 1, as in heat.c.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from typing import Any, NoReturn

import numpy as np
from mpi4py import MPI

from melissa import client

COMM = MPI.COMM_WORLD
TEMPERATURES = ("initial", "left", "right", "bottom", "top")


class _Parser(argparse.ArgumentParser):
    # Every rank parses the same command line: only rank 0 says what is wrong, all exit with 2.
    def error(self, message: str) -> NoReturn:
        if COMM.rank == 0:
            self.print_usage(sys.stderr)
            print(f"{self.prog}: {message}", file=sys.stderr)
        sys.exit(2)


def _converter(kind: type, test: Callable[[Any], bool], what: str) -> Callable[[str], Any]:
    """An argparse type: `kind` values that pass `test`, else an error saying `what` is due."""
    def convert(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not test(value):
            raise argparse.ArgumentTypeError(f"needs {what}, got {text!r}")
        return value
    return convert


_positive_int = _converter(int, lambda v: v > 0, "a positive integer")
_finite = _converter(float, math.isfinite, "a finite number")
_positive = _converter(float, lambda v: math.isfinite(v) and v > 0, "a positive number")
_directory = _converter(str, bool, "a directory")


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = _Parser(prog="heat.py", allow_abbrev=False,
                     description="2D heat equation, explicit finite differences, rows over MPI "
                     "ranks; streams each time step to melissa.")
    parser.add_argument("--nx", type=_positive_int, default=40, help="interior columns")
    parser.add_argument("--ny", type=_positive_int, default=40, help="interior rows")
    parser.add_argument("--steps", type=_positive_int, default=20, help="time steps")
    parser.add_argument("--alpha", type=_positive, default=1.0, help="diffusivity")
    parser.add_argument("--field-name", default="temperature")
    parser.add_argument("--write-fields", metavar="DIR", type=_directory,
                        help="also write every time step to DIR/step-TTTT.bin (DIR must exist)")
    parser.add_argument("--no-melissa", action="store_true", help="run without a study")
    # One argument each: argparse of Python < 3.12 fails on a missing nargs=5 with a metavar
    # tuple.
    for name in TEMPERATURES:
        parser.add_argument(name, type=_finite, metavar=name.upper())
    args = parser.parse_args(argv)
    if args.ny < COMM.size:
        parser.error("ny must be at least the number of MPI ranks")
    # Gatherv counts and melissa's sizes are C ints.
    if args.nx * args.ny > 2**31 - 1:
        parser.error("nx * ny must be below 2^31")
    return args


def fail(what: str, why: object) -> NoReturn:
    """A failure on one rank must not leave the others waiting in a collective call."""
    print(f"heat.py rank {COMM.rank}: {what}: {why}", file=sys.stderr, flush=True)
    COMM.Abort(1)
    raise SystemExit(1)  # not reached: Abort ends the process


def melissa_call(name: str, function: Callable[..., None], *args: object) -> None:
    try:
        function(*args)
    except client.ClientError as error:
        fail(name, error)


def first_row(rank: int, n_ranks: int, ny: int) -> int:
    return rank * ny // n_ranks


def main() -> None:
    args = parse()
    nx, ny = args.nx, args.ny
    initial, left, right, bottom, top = (getattr(args, name) for name in TEMPERATURES)
    rank, n_ranks = COMM.rank, COMM.size
    row0 = first_row(rank, n_ranks, ny)
    rows = first_row(rank + 1, n_ranks, ny) - row0
    below = rank - 1 if rank > 0 else MPI.PROC_NULL
    above = rank + 1 if rank < n_ranks - 1 else MPI.PROC_NULL

    # Both arrays hold the boundary values, so swapping them keeps them.
    u = np.full((rows + 2, nx + 2), initial)
    if below == MPI.PROC_NULL:
        u[0, :] = bottom
    if above == MPI.PROC_NULL:
        u[rows + 1, :] = top
    u[:, 0] = left
    u[:, nx + 1] = right
    new = u.copy()

    # Rank 0 gathers the whole field for --write-fields; every rank knows the decomposition.
    field = np.empty(nx * ny) if args.write_fields is not None and rank == 0 else None
    gather = None
    if field is not None:
        starts = [first_row(r, n_ranks, ny) * nx for r in range(n_ranks + 1)]
        gather = [field, np.diff(starts), starts[:-1], MPI.DOUBLE]

    if not args.no_melissa:
        melissa_call("melissa_init", client.init, args.field_name, rows * nx, COMM)

    hx, hy = 1.0 / (nx + 1), 1.0 / (ny + 1)
    h = min(hx, hy)
    dt = 0.2 * h * h / args.alpha
    rx, ry = args.alpha * dt / (hx * hx), args.alpha * dt / (hy * hy)

    for step in range(args.steps):
        # My first row to the rank below, whose top halo it is; my last row to the rank above.
        COMM.Sendrecv(u[1, 1:-1], below, 0, u[rows + 1, 1:-1], above, 0)
        COMM.Sendrecv(u[rows, 1:-1], above, 1, u[0, 1:-1], below, 1)
        # The operations in this order in all three languages, for the same rounding.
        c = u[1:-1, 1:-1]
        new[1:-1, 1:-1] = (c + rx * (u[1:-1, :-2] - 2.0 * c + u[1:-1, 2:])
                           + ry * (u[:-2, 1:-1] - 2.0 * c + u[2:, 1:-1]))
        u, new = new, u

        cells = np.ascontiguousarray(u[1:-1, 1:-1]).reshape(-1)
        if not args.no_melissa:
            melissa_call("melissa_send", client.send, args.field_name, cells)
        if args.write_fields is not None:
            COMM.Gatherv(cells, gather, root=0)
            if field is not None:
                path = f"{args.write_fields}/step-{step:04d}.bin"
                try:
                    field.astype("<f8").tofile(path)
                except OSError as error:
                    fail(path, error.strerror)

    if not args.no_melissa:
        melissa_call("melissa_finalize", client.finalize)


if __name__ == "__main__":
    main()
