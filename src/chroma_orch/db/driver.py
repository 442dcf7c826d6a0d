"""The asyncpg connection under a SQLAlchemy session, for the hot paths.

SQLAlchemy costs about 0.3 ms of CPU per ORM statement and 0.15 ms per ``text()``
one; the same statement sent with asyncpg costs about 0.05 ms. The statements
every lifecycle request and every reconcile pass run (see ``db/rows.py``) go
through ``driver(session)``: in the session's own transaction, so they commit or
roll back with everything else the unit of work did.
"""

from __future__ import annotations

from typing import Any

import asyncpg
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

_MISSING = object()
_KEY = "chroma_orch.driver"


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
        if known[2] or not begin:
            return cached
    connection = await session.connection()
    pooled = await connection.get_raw_connection()
    adapted: Any = pooled.dbapi_connection
    state = getattr(adapted, "_transaction", _MISSING)
    if state is None and not begin:
        pass  # leave it to the next statement that needs one
    elif state is None and hasattr(adapted, "_start_transaction"):
        await adapted._start_transaction()  # what SQLAlchemy does before its first statement
    elif state is _MISSING or state is None:
        await connection.execute(text("SELECT 1"))  # the public way, should the above change
    driver_connection: asyncpg.Connection = pooled.driver_connection
    begun = getattr(adapted, "_transaction", None) is not None
    session.info[_KEY] = (session.sync_session.get_transaction(), driver_connection, begun)
    return driver_connection
