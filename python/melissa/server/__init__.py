# SPDX-License-Identifier: BSD-3-Clause
"""The server side: receivers that take the clients' data off the network on C++ threads."""

from melissa.server.receiver import open_receiver

__all__ = ["open_receiver"]
