"""Whether an exception means PostgreSQL cannot be reached right now (so a request
gets 503 and a retry hint, not 500).

Decided by the exceptions' types alone. SQLAlchemy does not wrap a failed connect:
asyncpg's ``OSError`` comes through as it is (``ConnectionRefusedError`` from TCP,
``socket.gaierror`` for a host name that does not resolve, ``FileNotFoundError``
for a Unix socket that is not there, as with the embedded cluster stopped); a
connection lost in use comes as a ``DBAPIError`` with ``connection_invalidated``.
"""

from __future__ import annotations

import socket

import asyncpg
from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

_UNREACHABLE = (
    DisconnectionError,
    PoolTimeoutError,  # no pooled connection came free in time
    asyncpg.exceptions.PostgresConnectionError,  # class 08: the connection does not exist
    asyncpg.exceptions.OperatorInterventionError,  # 57P01 shutdown, 57P03 cannot connect now
    ConnectionError,  # refused, reset, aborted, broken pipe
    socket.gaierror,  # the host name does not resolve (now)
)


def _missing_socket(exc: BaseException) -> bool:
    """A ``connect()`` to a Unix socket that does not exist: ``FileNotFoundError``
    without a file name (file operations name the file they did not find)."""
    return isinstance(exc, FileNotFoundError) and exc.filename is None


def _unreachable(exc: BaseException) -> bool:
    if isinstance(exc, _UNREACHABLE) or _missing_socket(exc):
        return True
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


def database_unreachable(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) means PostgreSQL cannot be reached right now."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if _unreachable(current):
            return True
        current = current.__cause__ or current.__context__
    return False
