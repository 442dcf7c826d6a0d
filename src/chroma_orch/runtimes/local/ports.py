"""The host ports local servers listen on: the local runtime asks for one through
``PortReservations`` (implemented by ``db.ports.PortReservationsInDb``, which keeps
them unique across replicas and applies the address quarantine) and checks that
nothing else listens there."""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Protocol


class PortReservations(Protocol):
    """Where the local runtime gets its servers' ports."""

    async def reserve(self, instance_id: str, usable: Callable[[int], bool]) -> int:
        """A port for the instance's server: the one it holds, else a free one of
        the pool, for which ``usable`` is true. Never a port another instance left
        within the address quarantine: when only such ports are free, raises
        ``chroma_orch.errors.NoPortAvailableError`` with ``retry_after`` set."""
        ...

    async def record(self, instance_id: str, port: int) -> None:
        """The instance's server listens on ``port`` (an adopted server)."""
        ...


def port_is_free(host: str, port: int) -> bool:
    """True when nothing listens on ``host:port`` (a bind succeeds).

    SO_REUSEADDR, as servers set it: connections of a previous server lingering in
    TIME_WAIT do not make the port unusable, only a live listener does.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True
