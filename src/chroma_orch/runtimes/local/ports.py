"""Whether a host port is free for a local server: the local runtime asks
``RuntimeServices.ports`` (``runtimes.base.PortReservations``, implemented by
``db.ports.PortReservationsInDb``, which keeps ports unique across replicas and
applies the address quarantine) for one that is."""

from __future__ import annotations

import socket


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
