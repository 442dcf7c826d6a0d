"""The advisory-lock helper against real PostgreSQL: a try answers whether it got
the lock, a take waits for the holder, and both end with the transaction."""

from __future__ import annotations

import asyncio
import uuid

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from chroma_orch.db.locks import LockKey, NamedLock, lock, named_key, try_lock
from chroma_orch.db.session import create_engine
from tests.helpers import wait_for


async def _pid(conn: AsyncConnection) -> int:
    return int(await conn.scalar(text("SELECT pg_backend_pid()")) or 0)


async def _waiting(conn: AsyncConnection, pid: int) -> bool:
    found = await conn.scalar(
        text(
            "SELECT count(*) FROM pg_locks "
            "WHERE pid = :pid AND locktype = 'advisory' AND NOT granted"
        ),
        {"pid": pid},
    )
    return bool(found)


async def test_try_lock_is_refused_while_held_and_free_once_the_holder_commits(
    database_url: str,
) -> None:
    engine = create_engine(database_url)
    try:
        async with engine.connect() as holder, engine.connect() as other:
            async with holder.begin():
                assert await try_lock(holder, LockKey.CULLER)
                async with other.begin():
                    assert not await try_lock(other, LockKey.CULLER)
                    assert await try_lock(other, LockKey.RETENTION)  # another key: free
            async with other.begin():
                assert await try_lock(other, LockKey.CULLER)
    finally:
        await engine.dispose()


async def test_lock_waits_for_the_holder_of_the_same_name_only(database_url: str) -> None:
    engine = create_engine(database_url)
    tenant = uuid.uuid4()
    try:
        async with (
            engine.connect() as holder,
            engine.connect() as waiter,
            engine.connect() as watch,
        ):
            await holder.begin()
            await lock(holder, NamedLock.IDEMPOTENCY, tenant, "k1")
            async with waiter.begin():  # another key of the same kind does not wait
                await lock(waiter, NamedLock.IDEMPOTENCY, tenant, "k2")
            pid = await _pid(waiter)  # begins the waiter's transaction
            taking = asyncio.create_task(lock(waiter, NamedLock.IDEMPOTENCY, tenant, "k1"))
            await wait_for(lambda: _waiting(watch, pid), timeout=10, interval=0.02)
            assert not taking.done()
            await holder.commit()
            await asyncio.wait_for(taking, timeout=10)
            await waiter.commit()
    finally:
        await engine.dispose()


def test_named_keys_are_those_earlier_releases_locked() -> None:
    """Replicas of the previous release hash the same text, so both exclude each other."""
    tenant = uuid.UUID(int=1)
    assert named_key(NamedLock.TENANT, "acme") == "tenant:acme"
    assert named_key(NamedLock.IDEMPOTENCY, tenant, "k") == f"idempotency:{tenant}:k"
    assert named_key(NamedLock.MIGRATE) == "migrate"
    assert named_key(NamedLock.ADMIN_TOKEN) == "admin-token"
