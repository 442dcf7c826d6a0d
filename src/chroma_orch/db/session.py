"""Engine and session factory. A unit of work commits through ``commit`` so its
events and notifications are written atomically with it."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event, exc
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)


def create_engine(
    url: str,
    *,
    application_name: str = "chroma-orch",
    pool_size: int = 10,
    durable_commits: bool = True,
    pre_ping: bool = True,
) -> AsyncEngine:
    """An engine whose connections carry ``application_name`` (leases use it to tell
    whether their owner is still connected).

    ``durable_commits=False`` turns off ``synchronous_commit`` for its connections:
    for the reconciler's writes of observed state, which a crash can only make
    stale (the next pass observes again), never wrong. API writes stay durable.
    ``pre_ping`` drops, on checkout, a pooled connection whose socket PostgreSQL
    closed (a restart, a terminated backend), so the request gets a fresh one.
    It asks the driver, not the server: SQLAlchemy's own pre-ping costs three
    round trips (BEGIN, a ping, ROLLBACK) per checkout, the price of a whole
    request on a fast path. A peer that vanished without closing its sockets is
    found by the first statement instead, which then invalidates the pool.
    """
    server_settings = {"application_name": application_name}
    connect_args: dict[str, object] = {"server_settings": server_settings, "timeout": 10}
    if not durable_commits:
        server_settings["synchronous_commit"] = "off"
    engine = create_async_engine(
        url,
        connect_args=connect_args,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_recycle=1800,
    )
    if pre_ping:
        event.listen(engine.sync_engine.pool, "checkout", _drop_if_closed)
    return engine


def _drop_if_closed(_dbapi: Any, _record: Any, proxy: Any) -> None:
    if proxy.driver_connection.is_closed():
        raise exc.DisconnectionError("connection closed by the server")


def create_session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)
