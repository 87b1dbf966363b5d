# SPDX-License-Identifier: BSD-3-Clause
"""The client API for Python solvers: init, send, finalize, over the same C library as C and
Fortran solvers.

    from mpi4py import MPI
    from melissa import client

    client.init("temperature", local_size, MPI.COMM_WORLD)  # once per field (collective)
    for step in range(n_steps):
        ...
        client.send("temperature", values)  # float32 or float64, shape (local_size,)
    client.finalize()  # collective, before MPI finalizes

Without MPI, leave ``comm`` out. The launcher says where the server is through environment
variables (MELISSA_SERVER_ADDRESS, MELISSA_SIMULATION_ID, MELISSA_STUDY_TOKEN, MELISSA_TIMEOUT);
see the README. Every failure raises ClientError, with the C library's code and message.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

try:
    from melissa import _client
except ImportError as err:
    # The one part of melissa that needs MPI (melissa.stats does not): say so, not just which
    # shared object failed.
    raise ImportError(
        "melissa.client needs MPI: libmelissa links the system's MPI library (Open MPI for the "
        f"wheel; see README.md, Install). Cause: {err}") from err

__all__ = ["ClientError", "finalize", "init", "send"]

# The C ABI's error codes (melissa_api.h), by name.
ERROR_NAMES = {
    1: "environment",
    2: "argument",
    3: "state",
    4: "timeout",
    5: "rejected",
    6: "transport",
    7: "mpi",
    8: "internal",
}

_local_sizes: dict[str, int] = {}


class ClientError(RuntimeError):
    """A failed client call; ``code`` is the C ABI's error code, ``kind`` its name."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.kind = ERROR_NAMES.get(code, "unknown")


def _check(code: int) -> None:
    if code != 0:
        raise ClientError(code, _client.last_error())


def init(field_name: str, local_size: int, comm: Any = None) -> None:
    """Declares a field this solver sends: `local_size` values on this rank.

    comm: an mpi4py communicator (collective over it), or None for a solver without MPI.
    """
    if local_size < 0:
        raise ValueError(f"init: local_size must be >= 0, got {local_size}")
    handle = None if comm is None else comm.py2f()
    _check(_client.init(field_name, int(local_size), handle))
    _local_sizes[field_name] = int(local_size)


def send(field_name: str, values: npt.ArrayLike) -> None:
    """Sends the next time step of a field (float32 or float64, local_size values)."""
    if field_name not in _local_sizes:
        _check(_client.send(field_name, np.empty(0)))  # the library's own error
    array = np.asarray(values)
    if array.dtype not in (np.float32, np.float64):
        raise TypeError(f"send({field_name!r}): values must be float32 or float64, "
                        f"got {array.dtype}")
    expected = _local_sizes[field_name]
    if array.size != expected:
        raise ValueError(f"send({field_name!r}): expected {expected} values (init's local_size), "
                         f"got {array.size}")
    _check(_client.send(field_name, np.ascontiguousarray(array.reshape(-1))))


def finalize() -> None:
    """Tells the server this simulation is complete (collective, before MPI finalizes)."""
    try:
        _check(_client.finalize())
    finally:
        _local_sizes.clear()
