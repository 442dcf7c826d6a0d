"""Host ports for local servers: unique in the database, never one already in use."""

from __future__ import annotations

import random
import socket
import uuid

from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from chroma_orch.db.models import AllocatedPort

_CANDIDATES_PER_CALL = 64


class NoPortAvailableError(Exception):
    pass


def port_is_free(host: str, port: int) -> bool:
    """True when nothing listens on ``host:port`` (a bind succeeds).

    SO_REUSEADDR, as servers set it: connections of a previous server lingering in
    TIME_WAIT do not make the port unusable, only a live listener does.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


async def allocate_port(
    session: AsyncSession, instance_id: uuid.UUID, host: str, low: int, high: int
) -> int:
    """The instance's reserved port, or a new free one from ``low..high``."""
    current = await session.scalar(
        select(AllocatedPort.port).where(AllocatedPort.instance_id == instance_id)
    )
    if current is not None:
        if port_is_free(host, current):
            return current
        await release_port(session, instance_id)
    taken = set(
        await session.scalars(
            select(AllocatedPort.port).where(AllocatedPort.port.between(low, high))
        )
    )
    free = [p for p in range(low, high + 1) if p not in taken]
    random.shuffle(free)  # replicas allocating at once rarely collide
    for port in free[:_CANDIDATES_PER_CALL]:
        if not port_is_free(host, port):
            continue
        inserted = await session.scalar(
            insert(AllocatedPort)
            .values(port=port, instance_id=instance_id)
            .on_conflict_do_nothing()
            .returning(AllocatedPort.port)
        )
        if inserted is not None:
            return port
    raise NoPortAvailableError(f"no free port in {low}-{high}")


async def release_port(session: AsyncSession, instance_id: uuid.UUID) -> None:
    await session.execute(delete(AllocatedPort).where(AllocatedPort.instance_id == instance_id))


async def reserve_port(session: AsyncSession, instance_id: uuid.UUID, port: int) -> None:
    """Record that the instance's server listens on ``port`` (e.g. an adopted server)."""
    current = await session.scalar(
        select(AllocatedPort.port).where(AllocatedPort.instance_id == instance_id)
    )
    if current == port:
        return
    await release_port(session, instance_id)
    await session.execute(
        insert(AllocatedPort).values(port=port, instance_id=instance_id).on_conflict_do_nothing()
    )
