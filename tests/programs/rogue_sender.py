# SPDX-License-Identifier: BSD-3-Clause
"""Sends every rank of a running server what a client would not, which must cost the server
nothing but a drop counted (and it must keep serving the real clients):

    python rogue_sender.py ADDRESS_FILE TOKEN_HEX

ADDRESS_FILE is collect_server.py's (every rank's data endpoint, and what the study declares).
To each rank, in turn:

1. without the study token, a well-formed message of the study and some junk: the connection is
   refused before it carries anything, so none of it may reach the receiver;
2. with the token, messages that are not a client's, each of which the rank must drop and count;
3. with the token, over a connection spoken by hand (ZMTP 3.0, ZeroMQ RFC 23, with PLAIN, RFC
   24), a frame announced as 2 GiB, followed by up to 256 MiB of it: the rank must hang up at
   once rather than allocate the frame and take what comes.

The messages of 1 and 2 go through libzmq itself, by ctypes: the test needs no ZeroMQ binding for
Python, and libzmq lies wherever libmelissa does. Prints, as JSON, the reasons each rank should
count ("dropped", by rank) and, by rank, how much of the frame of 3 it took and whether it hung
up ("oversized").
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import socket
import struct
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ZMQ_PUSH, ZMQ_SNDMORE, ZMQ_LINGER = 8, 2, 17
ZMQ_PLAIN_USERNAME, ZMQ_PLAIN_PASSWORD = 45, 46
MAGIC, VERSION, DATA, FLOAT64 = 0x41534C4D, 2, 1, 2
HUGE_FIELD = 1 << 40  # cells: 8 TiB of float64
ANNOUNCED = 1 << 31  # bytes of the oversized frame
STREAMED = 256 << 20  # bytes of it sent at most
CHUNK = 1 << 20


def header(token: int, field_size: int = 1) -> bytes:
    """A well-formed data header (the layout of cpp/transport/wire.cpp) for one float64 value,
    the first cell of field 0 of simulation 9."""
    fields = struct.pack("<IHBBQIIIIIQQQ", MAGIC, VERSION, DATA, FLOAT64, token,
                         9,  # simulation
                         0, 0,  # time step, field
                         0, 1,  # client rank, client ranks
                         field_size, 0, 1)  # field size, offset, count
    return fields.ljust(64, b"\0")


def huge_field_reason(study: dict[str, Any], rank: int) -> str:
    """Why a rank drops a piece of a field of HUGE_FIELD cells."""
    declared = (study["field_sizes"] or [0])[0]
    if declared:
        return f"field '{study['fields'][0]}': {HUGE_FIELD} cells received, {declared} declared"
    # Not declared: the rank that owns the first cell cannot hold its share, the others do not
    # own the cell. The test server routes by cells: rank 0 owns the first cell.
    return "no memory to assemble the field" if rank == 0 else "cells not routed to this rank"


class Zmq:
    """The few libzmq calls this needs."""

    def __init__(self) -> None:
        lib = ctypes.CDLL(ctypes.util.find_library("zmq") or "libzmq.so.5")
        lib.zmq_ctx_new.restype = ctypes.c_void_p
        lib.zmq_socket.restype = ctypes.c_void_p
        lib.zmq_socket.argtypes = [ctypes.c_void_p, ctypes.c_int]
        lib.zmq_setsockopt.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p,
                                       ctypes.c_size_t]
        lib.zmq_connect.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        lib.zmq_send.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_int]
        lib.zmq_close.argtypes = [ctypes.c_void_p]
        lib.zmq_ctx_term.argtypes = [ctypes.c_void_p]
        self.lib = lib
        self.context = lib.zmq_ctx_new()

    def send_all(self, endpoint: str, messages: list[list[bytes]], password: str | None,
                 linger_ms: int) -> None:
        """Sends each message (its frames) through a PUSH socket presenting `password`
        (PLAIN), or nothing if None; closing waits up to linger_ms for them to leave."""
        lib = self.lib
        sock = lib.zmq_socket(self.context, ZMQ_PUSH)

        def option(name: int, value: bytes) -> None:
            lib.zmq_setsockopt(sock, name, value, len(value))

        linger = ctypes.c_int(linger_ms)
        lib.zmq_setsockopt(sock, ZMQ_LINGER, ctypes.byref(linger), ctypes.sizeof(linger))
        if password is not None:
            option(ZMQ_PLAIN_USERNAME, b"melissa")
            option(ZMQ_PLAIN_PASSWORD, password.encode())
        if lib.zmq_connect(sock, endpoint.encode()) != 0:
            raise OSError(f"cannot connect to {endpoint}")
        for frames in messages:
            for i, frame in enumerate(frames):
                more = ZMQ_SNDMORE if i + 1 < len(frames) else 0
                if lib.zmq_send(sock, frame, len(frame), more) != len(frame):
                    raise OSError(f"zmq_send to {endpoint} failed")
        lib.zmq_close(sock)

    def close(self) -> None:
        self.lib.zmq_ctx_term(self.context)


def receive_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("the server hung up during the handshake")
        data += chunk
    return data


def command(name: bytes, body: bytes) -> bytes:
    """A ZMTP command frame, short: flags (command), size, then the name and its body."""
    data = bytes([len(name)]) + name + body
    return bytes([0x04, len(data)]) + data


def read_command(sock: socket.socket) -> bytes:
    """The name of the next command the server sends."""
    flags = receive_exactly(sock, 1)[0]
    size = (struct.unpack(">Q", receive_exactly(sock, 8))[0] if flags & 0x02
            else receive_exactly(sock, 1)[0])
    body = receive_exactly(sock, size)
    return body[1:1 + body[0]]


def plain_push(endpoint: str, password: str) -> socket.socket:
    """A ZMTP 3.0 connection to `endpoint` as a PUSH socket, authenticated with PLAIN."""
    where = urlsplit(endpoint)
    assert where.hostname is not None and where.port is not None, endpoint
    sock = socket.create_connection((where.hostname, where.port), timeout=10)
    # Signature, version 3.0, mechanism, as-server (no), filler.
    sock.sendall(b"\xff" + bytes(8) + b"\x7f" + b"\x03\x00" + b"PLAIN".ljust(20, b"\0")
                 + b"\0" + bytes(31))
    receive_exactly(sock, 64)
    user, secret = b"melissa", password.encode()
    sock.sendall(command(b"HELLO", bytes([len(user)]) + user + bytes([len(secret)]) + secret))
    if read_command(sock) != b"WELCOME":
        raise ConnectionError("the server refused the token")
    socket_type = b"Socket-Type"
    sock.sendall(command(b"INITIATE", bytes([len(socket_type)]) + socket_type
                         + struct.pack(">I", 4) + b"PUSH"))
    if read_command(sock) != b"READY":
        raise ConnectionError("the server did not complete the handshake")
    return sock


def send_oversized(endpoint: str, password: str) -> dict[str, Any]:
    """Announces a frame of ANNOUNCED bytes and streams it; how much went, and whether the
    server hung up (rather than let the stream stall)."""
    sock = plain_push(endpoint, password)
    sent, hung_up = 0, False
    try:
        sock.sendall(bytes([0x02]) + struct.pack(">Q", ANNOUNCED))  # a long, final message frame
        chunk = bytes(CHUNK)
        while sent < STREAMED:
            sock.sendall(chunk)
            sent += CHUNK
    except (ConnectionResetError, BrokenPipeError):
        hung_up = True
    except TimeoutError:
        pass
    finally:
        sock.close()
    return {"hung_up": hung_up, "sent": sent}


def main() -> int:
    address_file, token = sys.argv[1], int(sys.argv[2], 16)
    study = json.loads(Path(address_file).read_text())
    password = f"{token:016x}"
    value = struct.pack("<d", 1.0)
    without_token = [[header(token), value], [b"junk"], [header(token), value, b"extra"]]
    # (frames, the reason the receiver gives for dropping them, by rank)
    with_token = [
        ([b"junk"], lambda rank: "malformed: shorter than a header"),
        ([bytes(64)], lambda rank: "malformed: not a melissa message"),
        ([header(token ^ 1), value], lambda rank: "wrong study token"),
        ([header(token), value, b"extra"], lambda rank: "malformed: extra frames"),
        ([header(token, HUGE_FIELD), value], lambda rank: huge_field_reason(study, rank)),
    ]

    zmq = Zmq()
    dropped, oversized = [], []
    for rank, endpoint in enumerate(study["layout"]):
        tcp = endpoint["tcp"]
        try:
            # Refused, what it queued would wait forever: 1 s is long enough to have got through.
            zmq.send_all(tcp, without_token, None, linger_ms=1000)
            # Closing waits up to 5 s for the messages to leave: they must reach the server.
            zmq.send_all(tcp, [frames for frames, _ in with_token], password, linger_ms=5000)
            oversized.append(send_oversized(tcp, password))
        except OSError as err:
            print(f"rogue_sender: {tcp}: {err}", file=sys.stderr)
            return 1
        dropped.append([reason(rank) for _, reason in with_token])
    zmq.close()
    print(json.dumps({"dropped": dropped, "oversized": oversized}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
