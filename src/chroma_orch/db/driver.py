"""The asyncpg connection under a SQLAlchemy session, for the hot paths.

SQLAlchemy costs about 0.3 ms of CPU per ORM statement and 0.15 ms per ``text()``
one; the same statement sent with asyncpg costs about 0.05 ms. The statements
every lifecycle request and every reconcile pass run (``db/statements.py``) go
through ``driver(session)``: in the session's own transaction, so they commit or
roll back with everything else the unit of work did. Only SQLAlchemy's public
API is used: ``AsyncSession.connection()``, ``AsyncConnection.get_raw_connection()``
and ``driver_connection``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import asyncpg
from sqlalchemy.ext.asyncio import AsyncSession

from chroma_orch.db.statements import Statement

_KEY = "chroma_orch.driver"
_BEGIN = "SELECT 1"
"""Sent through SQLAlchemy when a transaction must begin: SQLAlchemy's asyncpg
adapter begins its transaction before its first statement (one BEGIN it will
COMMIT or ROLLBACK), which a statement sent straight to asyncpg would bypass."""


async def driver(session: AsyncSession, *, begin: bool = True) -> asyncpg.Connection:
    """``session``'s asyncpg connection, its transaction begun.

    ``begin=False`` is for a statement that is a unit on its own (a read: under
    READ COMMITTED every statement reads its own snapshot anyway; or one statement
    that does all its writes): when nothing has begun a transaction yet, it runs
    by itself and saves the BEGIN and COMMIT round trips. A later
    ``driver(session)`` begins the transaction as usual.
    """
    transaction = session.sync_session.get_transaction()
    known = session.info.get(_KEY)
    if transaction is not None and known is not None and known[0] is transaction:
        cached: asyncpg.Connection = known[1]  # same transaction, so the same connection
        if not begin or cached.is_in_transaction():
            return cached
    connection = await session.connection()
    pooled = await connection.get_raw_connection()
    raw: asyncpg.Connection = pooled.driver_connection
    if begin and not raw.is_in_transaction():
        await connection.exec_driver_sql(_BEGIN)
    session.info[_KEY] = (session.sync_session.get_transaction(), raw)
    return raw


async def fetchrow_begun(
    session: AsyncSession, statement: Statement, **values: Any
) -> Mapping[Any, Any] | None:
    """``statement``'s first row, inside ``session``'s transaction. When none has
    begun, the statement begins it: sent through SQLAlchemy (``exec_driver_sql``,
    the compiled text and arguments as they are), whose adapter begins before its
    first statement, instead of after a ``SELECT 1`` sent for that (a round trip
    saved where a unit of work starts with a locking read)."""
    con = await driver(session, begin=False)
    if con.is_in_transaction():
        return await statement.fetchrow(con, **values)
    connection = await session.connection()
    result = await connection.exec_driver_sql(statement.sql, tuple(statement.args(values)))
    return result.mappings().first()
