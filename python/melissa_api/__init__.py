# SPDX-License-Identifier: BSD-3-Clause
"""Inria Melissa's Python client API, for solvers written against Melissa:

    from melissa_api import melissa_init, melissa_send, melissa_finalize

    melissa_init("temperature", local_size, comm)   # comm: an mpi4py communicator
    melissa_send("temperature", values)             # a numpy array of local_size values
    melissa_finalize()

As in Melissa, a failed call prints the error and ends the program with a non-zero status (the
whole MPI job, so that no rank waits forever). New solvers should use melissa.client, which
raises melissa.client.ClientError instead.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import numpy.typing as npt

from melissa import client

__all__ = ["melissa_finalize", "melissa_init", "melissa_send"]


def _or_exit(call: Callable[..., None], *args: Any) -> None:
    """Melissa's behaviour on failure: the message, then the end of the program."""
    try:
        call(*args)
    except client.ClientError as error:
        print(f"melissa: {error}", file=sys.stderr, flush=True)
        mpi = sys.modules.get("mpi4py.MPI")
        if mpi is not None and mpi.Is_initialized() and not mpi.Is_finalized():
            mpi.COMM_WORLD.Abort(1)
        sys.exit(1)


def melissa_init(field_name: str, vect_size: int, comm: Any = None) -> None:
    """Declares a field this solver sends (collective over comm; None without MPI)."""
    _or_exit(client.init, field_name, vect_size, comm)


def melissa_send(field_name: str, send_vect: npt.ArrayLike) -> None:
    """Sends the next time step of a field."""
    _or_exit(client.send, field_name, send_vect)


def melissa_finalize() -> None:
    """Tells the server this simulation is complete (collective)."""
    _or_exit(client.finalize)
