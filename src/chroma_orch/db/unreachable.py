"""Whether an exception means PostgreSQL cannot be reached right now (so a request
gets 503 and a retry hint, not 500)."""

from __future__ import annotations

import traceback

import asyncpg
from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

_UNREACHABLE = (
    DisconnectionError,
    PoolTimeoutError,
    asyncpg.exceptions.PostgresConnectionError,  # class 08: the connection does not exist
    asyncpg.exceptions.OperatorInterventionError,  # 57P01 shutdown, 57P03 cannot connect now
)
_CONNECT_CODE = ("sqlalchemy/pool/base.py", "asyncpg/connect_utils.py")


def _raised_while_connecting(exc: BaseException) -> bool:
    """An OSError from opening a database connection (socket gone, refused, timed out),
    not from anything else the request did."""
    return any(
        frame.f_code.co_filename.endswith(_CONNECT_CODE)
        for frame, _ in traceback.walk_tb(exc.__traceback__)
    )


def database_unreachable(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) means PostgreSQL cannot be reached right now."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, _UNREACHABLE):
            return True
        if isinstance(current, DBAPIError) and current.connection_invalidated:
            return True
        if isinstance(current, OSError) and _raised_while_connecting(current):
            return True
        current = current.__cause__ or current.__context__
    return False
