"""Host ports for local servers: unique in the database, never one already in use."""

from __future__ import annotations

import random
import socket
import uuid

from sqlalchemy.ext.asyncio import AsyncSession

from chroma_orch.db.driver import driver

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


def pick_unused_port(host: str, low: int, high: int) -> int | None:
    """A random port of ``low..high`` nothing listens on (None after a few misses)."""
    for _ in range(8):
        port = random.randint(low, high)
        if port_is_free(host, port):
            return port
    return None


async def allocate_port(
    session: AsyncSession, instance_id: uuid.UUID, host: str, low: int, high: int
) -> int:
    """The instance's reserved port if nothing else listens on it, or a new free one
    from ``low..high``, found by reading every taken port. (The common case, a
    random pick reserved within the write that records "starting", is
    ``reconciler.queue.fenced_update``'s ``reserve_port``; this is what follows
    when that pick did not take.)"""
    con = await driver(session)
    rows = await con.fetch(
        "SELECT port, instance_id = $1 AS mine FROM allocated_ports "
        "WHERE instance_id = $1 OR port BETWEEN $2 AND $3",
        instance_id,
        low,
        high,
    )
    current = next((row["port"] for row in rows if row["mine"]), None)
    if current is not None:
        if port_is_free(host, current):
            return int(current)
        await release_port(session, instance_id)
    taken = {row["port"] for row in rows}
    free = [p for p in range(low, high + 1) if p not in taken]
    random.shuffle(free)  # replicas allocating at once rarely collide
    for port in free[:_CANDIDATES_PER_CALL]:
        if not port_is_free(host, port):
            continue
        if await con.fetchval(_INSERT, port, instance_id) is not None:
            return port
    raise NoPortAvailableError(f"no free port in {low}-{high}")


_INSERT = (
    "INSERT INTO allocated_ports (port, instance_id) VALUES ($1, $2) "
    "ON CONFLICT DO NOTHING RETURNING port"
)


async def release_port(session: AsyncSession, instance_id: uuid.UUID) -> None:
    con = await driver(session)
    await con.execute("DELETE FROM allocated_ports WHERE instance_id = $1", instance_id)


async def reserve_port(session: AsyncSession, instance_id: uuid.UUID, port: int) -> None:
    """Record that the instance's server listens on ``port`` (e.g. an adopted server)."""
    con = await driver(session)
    current = await con.fetchval(
        "SELECT port FROM allocated_ports WHERE instance_id = $1", instance_id
    )
    if current == port:
        return
    await release_port(session, instance_id)
    await con.fetchval(_INSERT, port, instance_id)
