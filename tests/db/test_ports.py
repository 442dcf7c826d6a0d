"""The local runtime's port reservations, against real PostgreSQL: unique, the
instance's own port again, and never a port another instance left within the
address quarantine (the caller waits ``retry_after``)."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from sqlalchemy import delete, insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chroma_orch.db.models import AllocatedPort, Instance, ReleasedEndpoint, Tenant
from chroma_orch.db.ports import PortPool, PortReservationsInDb
from chroma_orch.db.session import create_engine, create_session_factory
from chroma_orch.errors import NoPortAvailableError
from chroma_orch.runtimes.base import PortReservations

_PORT = 24321
_POOL = PortPool("127.0.0.1", _PORT, _PORT, timedelta(seconds=30))  # one port


def _anything(_: int) -> bool:
    return True


async def test_one_port_for_one_instance_and_the_quarantine_for_the_next(
    database_url: str,
) -> None:
    engine = create_engine(database_url)
    sessions = create_session_factory(engine)
    ports: PortReservations = PortReservationsInDb(sessions, _POOL)
    try:
        first, second = await _instances(sessions)
        assert await ports.reserve(str(first), _anything) == _PORT
        assert await ports.reserve(str(first), _anything) == _PORT  # its own, again
        with pytest.raises(NoPortAvailableError) as full:
            await ports.reserve(str(second), _anything)
        assert full.value.retry_after is None  # taken, not quarantined: the pool is full
        async with sessions() as session:  # the first server left: the port is released
            await session.execute(delete(AllocatedPort))
            await session.execute(
                insert(ReleasedEndpoint).values(host=_POOL.host, port=_PORT, instance_id=first)
            )
            await session.commit()
        with pytest.raises(NoPortAvailableError) as quarantined:
            await ports.reserve(str(second), _anything)
        assert quarantined.value.retry_after is not None
        assert 0 < quarantined.value.retry_after <= 30
        assert await ports.reserve(str(first), _anything) == _PORT  # its own at once
    finally:
        await engine.dispose()


async def test_a_port_something_else_listens_on_is_skipped(database_url: str) -> None:
    engine = create_engine(database_url)
    sessions = create_session_factory(engine)
    pool = PortPool("127.0.0.1", _PORT, _PORT + 1, timedelta(seconds=30))
    ports = PortReservationsInDb(sessions, pool)
    try:
        first, second = await _instances(sessions)
        assert await ports.reserve(str(first), lambda port: port == _PORT + 1) == _PORT + 1
        with pytest.raises(NoPortAvailableError):  # the other port is busy, this one taken
            await ports.reserve(str(second), lambda port: port == _PORT + 1)
        await ports.record(str(second), _PORT)  # an adopted server's port
        with pytest.raises(NoPortAvailableError):
            await ports.reserve(str(first), lambda port: port == _PORT)  # its own is busy now
    finally:
        await engine.dispose()


async def _instances(sessions: async_sessionmaker[AsyncSession]) -> tuple[uuid.UUID, uuid.UUID]:
    """Two instances of a new tenant (ports belong to instances)."""
    async with sessions() as session:
        tenant = Tenant(name=f"t-{uuid.uuid4().hex[:8]}")
        session.add(tenant)
        await session.flush()
        created = [
            Instance(
                tenant_id=tenant.id,
                name=f"i{n}",
                runtime="local",
                desired_state="running",
                phase="pending",
            )
            for n in range(2)
        ]
        session.add_all(created)
        await session.commit()
        return created[0].id, created[1].id
