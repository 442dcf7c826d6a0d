"""Engine and session factory. A unit of work commits through ``commit`` so its
events and notifications are written atomically with it."""

from __future__ import annotations

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
    ``pre_ping=False`` skips the liveness round trip on checkout, for callers that
    retry a failed unit of work anyway (the reconciler).
    """
    server_settings = {"application_name": application_name}
    connect_args: dict[str, object] = {"server_settings": server_settings, "timeout": 10}
    if not durable_commits:
        server_settings["synchronous_commit"] = "off"
    return create_async_engine(
        url,
        connect_args=connect_args,
        pool_size=pool_size,
        max_overflow=pool_size * 2,
        pool_pre_ping=pre_ping,
        pool_recycle=1800,
    )


def create_session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)
