"""HOST:PORT addresses: parsing them, and checking one is free before a node binds it."""
from __future__ import annotations

import socket

from .store import DataDirError


def split_address(address: str) -> tuple[str, int]:
    """("host", port) of "HOST:PORT"; ValueError naming the address when it is not one."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"address must be HOST:PORT, got {address!r}")
    return host, int(port)


def check_port_free(address: str, what: str) -> None:
    """DataDirError (a start-up refusal) when `address` cannot be bound now."""
    host, port = split_address(address)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            raise DataDirError(f"{what} address {address} is not available: {exc.strerror}") from None
