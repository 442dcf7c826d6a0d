"""The event log's commit: staged events go in with their transaction, in commit
order, and the ordering lock is never held between two statements of a client."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chroma_orch.db.driver import driver
from chroma_orch.db.listener import asyncpg_dsn
from chroma_orch.db.locks import LockKey
from chroma_orch.db.models import Event
from chroma_orch.db.outbox import (
    appending,
    commit,
    discard_pending,
    event_row,
    event_values,
    record_event,
    staged,
)
from chroma_orch.db.session import create_engine, create_session_factory
from chroma_orch.db.statements import compiled

_parts = appending(None)
_STAGING_WRITE = compiled("test_outbox_write", select(*_parts.items).add_cte(*_parts.ctes))
"""A write that appends or stages its events as ``event_values`` says (no gate)."""


@pytest.fixture
async def sessions(database_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_engine(database_url)
    yield create_session_factory(engine)
    await engine.dispose()


def _event(marker: str, n: int) -> dict[str, Any]:
    return event_row(type="test.outbox", instance_id=None, tenant_id=None, after={marker: n})


async def _write(session: AsyncSession, *events: dict[str, Any]) -> None:
    """A write statement inside the session's transaction, staging ``events``."""
    con = await driver(session)
    await _STAGING_WRITE.fetchrow(con, **event_values(True, events, {}))
    staged(session)


async def _logged(sessions: async_sessionmaker[AsyncSession], marker: str) -> list[tuple[int, int]]:
    """(seq, n) of the events marked ``marker``, in log order."""
    async with sessions() as session:
        rows = await session.execute(
            select(Event.seq, Event.after[marker].as_integer())
            .where(Event.after.has_key(marker))
            .order_by(Event.seq)
        )
        return [(seq, n) for seq, n in rows]


async def test_staged_and_recorded_events_commit_with_their_transaction(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    marker = f"m{uuid.uuid4().hex[:8]}"
    async with sessions() as session:
        await _write(session, _event(marker, 0), _event(marker, 1))
        record_event(session, **_event(marker, 2))
        await _write(session, _event(marker, 3))
        assert await _logged(sessions, marker) == []  # staged: nothing visible yet
        await commit(session)
        # the session goes on: a new transaction, then one that rolls back
        await _write(session, _event(marker, 4))
        await commit(session)
        await _write(session, _event(marker, 99))
        discard_pending(session)
        await session.rollback()
        await _write(session, _event(marker, 5))
        await commit(session)
    logged = await _logged(sessions, marker)
    assert [n for _, n in logged] == [0, 1, 3, 2, 4, 5]  # statements' first, then Python's
    assert [seq for seq, _ in logged] == sorted(seq for seq, _ in logged)


async def test_the_ordering_lock_is_not_held_while_a_transaction_stages(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """A transaction that staged events and waits before committing does not hold
    back another writer; the events then appear in commit order."""
    marker = f"m{uuid.uuid4().hex[:8]}"
    async with sessions() as slow, sessions() as fast:
        await _write(slow, _event(marker, 1))
        await _write(fast, _event(marker, 2))
        await asyncio.wait_for(commit(fast), timeout=5)
        await commit(slow)
    logged = await _logged(sessions, marker)
    assert [n for _, n in logged] == [2, 1]


async def test_a_write_alone_appends_its_events_at_once(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    marker = f"m{uuid.uuid4().hex[:8]}"
    async with sessions() as session:
        con = await driver(session, begin=False)
        assert not con.is_in_transaction()
        await _STAGING_WRITE.fetchrow(con, **event_values(False, [_event(marker, 7)], {}))
        assert [n for _, n in await _logged(sessions, marker)] == [7]  # committed by itself


_HOLDERS = (
    "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted"
    " AND classid = $1 AND objid = $2 AND objsubid = 1"
)
_IDLE_SINCE = (
    "SELECT pid FROM pg_stat_activity WHERE pid = any($1::int[])"
    " AND state = 'idle in transaction' AND state_change < $2"
)


def _watch_for_idle_holders(dsn: str, done: threading.Event) -> list[int]:
    """Backends seen idle in their transaction while holding the ordering lock: idle
    since before a moment ``t0``, and holding the lock after it (three statements,
    each its own snapshot, so a backend that was busy in between never counts)."""
    key = int(LockKey.EVENTS)

    async def watch() -> list[int]:
        con = await asyncpg.connect(dsn)
        seen: list[int] = []
        try:
            while not done.is_set():
                t0 = await con.fetchval("SELECT clock_timestamp()")
                holders = [r["pid"] for r in await con.fetch(_HOLDERS, key >> 32, key & 0xFFFFFFFF)]
                if holders:
                    seen += [r["pid"] for r in await con.fetch(_IDLE_SINCE, holders, t0)]
        finally:
            await con.close()
        return seen

    return asyncio.run(watch())


async def test_the_ordering_lock_is_released_within_the_commit_message(
    sessions: async_sessionmaker[AsyncSession], database_url: str
) -> None:
    """Whoever holds the ordering lock is executing a statement, never idle in its
    transaction between two messages of its client: on a busy replica, a turn of
    its event loop is milliseconds, and every other writer would wait it out. The
    writers here share their loop with a task that keeps it busy, as a loaded
    replica's is; the watcher runs on a thread of its own."""
    done = threading.Event()
    pool = concurrent.futures.ThreadPoolExecutor(1)
    watcher = asyncio.get_running_loop().run_in_executor(
        pool, _watch_for_idle_holders, asyncpg_dsn(database_url), done
    )

    async def busy() -> None:
        while not done.is_set():
            time.sleep(0.002)  # noqa: ASYNC251 (the point: a loop that is busy)
            await asyncio.sleep(0)

    async def writer(w: int) -> None:
        for n in range(60):
            async with sessions() as session:
                await (await driver(session)).execute("SELECT 1")  # a transaction begun
                record_event(session, **_event(f"lock_watch_{w}", n))
                await commit(session)

    hog = asyncio.create_task(busy())
    try:
        await asyncio.gather(*(writer(w) for w in range(4)))
    finally:
        done.set()
        await hog
        idle_holders = await watcher
        pool.shutdown()
    assert idle_holders == []
