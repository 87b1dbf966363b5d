# SPDX-License-Identifier: BSD-3-Clause
"""Opening a parallel server's receivers: one per MPI rank, with rank 0 answering handshakes."""

from __future__ import annotations

import os
import socket
import tempfile
from typing import Any

from melissa import _core


def resolve_transport(transport: str) -> str:
    """"auto" (both, each client taking UCX where it pays) needs UCX in this build; without it,
    ZeroMQ. Other names pass through."""
    if transport == "auto" and "ucx" not in _core.transports():
        return "zmq"
    return transport


def open_receiver(
    comm: Any,
    field_names: list[str],
    token: int,
    consumer: _core.Consumer,
    *,
    routing: str = "cells",
    high_water_mark: int = 8,
    field_sizes: list[int] | None = None,
    nb_time_steps: int = 0,
    bind_address: str | None = None,
    transport: str = "zmq",
) -> tuple[_core.Receiver, str]:
    """Binds a receiver on every rank of `comm` (collective) and starts rank 0's handshakes.

    Returns the receiver and, on every rank, the address clients need (MELISSA_SERVER_ADDRESS).
    routing: "cells" (each rank owns a contiguous share of every field's cells),
    "whole_by_simulation" or "whole_by_time_step" (whole fields, round robin).
    field_sizes: the cells of each field, when the study knows them (None, or 0 for a field: the
    first client's size is the field's). nb_time_steps: the time steps each simulation sends of
    each field, when the study knows it (0: a simulation is finished when it holds what the
    client's finalize says it sent).
    The host clients use is MELISSA_SERVER_HOST if set, else this host's name; the sockets listen
    on bind_address, by default the IP address that host name resolves to (clients connect to
    it). Unix sockets for clients on this host go in MELISSA_IPC_DIR (default: the temporary
    directory). transport: what carries the data, "zmq", "ucx" or "auto" (see
    resolve_transport); the handshakes always go over ZeroMQ.
    """
    host = os.environ.get("MELISSA_SERVER_HOST") or socket.gethostname()
    if bind_address is None:
        try:
            bind_address = socket.gethostbyname(host)
        except OSError as err:
            raise OSError(f"the server's host name {host!r} does not resolve to an address to "
                          "listen on (set MELISSA_SERVER_HOST, or pass bind_address)") from err
    ipc_dir = os.environ.get("MELISSA_IPC_DIR") or tempfile.gettempdir()
    receiver = _core.Receiver(
        field_names, token, comm.rank, comm.size, routing, host, ipc_dir, high_water_mark,
        consumer, bind_address=bind_address, field_sizes=field_sizes, nb_time_steps=nb_time_steps,
        transport=resolve_transport(transport),
    )
    layout = comm.allgather(receiver.endpoint)
    address = receiver.serve_handshakes(layout) if comm.rank == 0 else None
    return receiver, comm.bcast(address)
