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
    url: str, *, application_name: str = "chroma-orch", pool_size: int = 10
) -> AsyncEngine:
    """An engine whose connections carry ``application_name`` (leases use it to tell
    whether their owner is still connected)."""
    return create_async_engine(
        url,
        connect_args={"server_settings": {"application_name": application_name}},
        pool_size=pool_size,
        max_overflow=pool_size * 2,
        pool_pre_ping=True,
        pool_recycle=1800,
    )


def create_session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)
