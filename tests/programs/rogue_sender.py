# SPDX-License-Identifier: BSD-3-Clause
"""Sends messages that are not a client's to every rank of a running server, which must drop
and count each one (and keep serving the real clients):

    python rogue_sender.py ADDRESS_FILE TOKEN_HEX

ADDRESS_FILE is collect_server.py's (it lists every rank's data endpoint). The messages go
through libzmq itself, by ctypes: the test needs no ZeroMQ binding for Python, and libzmq lies
wherever libmelissa does. Prints, as JSON, the reason each rank should count for each message.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import struct
import sys
from pathlib import Path

ZMQ_PUSH, ZMQ_SNDMORE, ZMQ_LINGER = 8, 2, 17
MAGIC, VERSION, DATA, FLOAT64 = 0x41534C4D, 1, 1, 2


def header(token: int) -> bytes:
    """A well-formed data header (the layout of cpp/transport/wire.cpp) for one float64 value."""
    fields = struct.pack("<IHBBQIIIIIQQQ", MAGIC, VERSION, DATA, FLOAT64, token,
                         9,  # simulation
                         0, 0,  # time step, field
                         0, 1,  # client rank, client ranks
                         1, 0, 1)  # field size, offset, count
    return fields.ljust(64, b"\0")


def main() -> int:
    address_file, token = sys.argv[1], int(sys.argv[2], 16)
    layout = json.loads(Path(address_file).read_text())["layout"]
    value = struct.pack("<d", 1.0)
    # (frames, the reason the receiver gives for dropping them)
    messages = [
        ([b"junk"], "malformed: shorter than a header"),
        ([bytes(64)], "malformed: not a melissa message"),
        ([header(token ^ 1), value], "wrong study token"),
        ([header(token), value, b"extra"], "malformed: extra frames"),
    ]

    zmq = ctypes.CDLL(ctypes.util.find_library("zmq") or "libzmq.so.5")
    zmq.zmq_ctx_new.restype = ctypes.c_void_p
    zmq.zmq_socket.restype = ctypes.c_void_p
    zmq.zmq_socket.argtypes = [ctypes.c_void_p, ctypes.c_int]
    zmq.zmq_setsockopt.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t]
    zmq.zmq_connect.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    zmq.zmq_send.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_int]
    zmq.zmq_close.argtypes = [ctypes.c_void_p]
    zmq.zmq_ctx_term.argtypes = [ctypes.c_void_p]

    context = zmq.zmq_ctx_new()
    for endpoint in layout:
        socket = zmq.zmq_socket(context, ZMQ_PUSH)
        # Closing waits up to 5 s for the messages to leave: they must reach the server.
        linger = ctypes.c_int(5000)
        zmq.zmq_setsockopt(socket, ZMQ_LINGER, ctypes.byref(linger), ctypes.sizeof(linger))
        if zmq.zmq_connect(socket, endpoint["tcp"].encode()) != 0:
            print(f"rogue_sender: cannot connect to {endpoint['tcp']}", file=sys.stderr)
            return 1
        for frames, _ in messages:
            for i, frame in enumerate(frames):
                more = ZMQ_SNDMORE if i + 1 < len(frames) else 0
                if zmq.zmq_send(socket, frame, len(frame), more) != len(frame):
                    print(f"rogue_sender: zmq_send to {endpoint['tcp']} failed", file=sys.stderr)
                    return 1
        zmq.zmq_close(socket)
    zmq.zmq_ctx_term(context)
    print(json.dumps([reason for _, reason in messages]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
