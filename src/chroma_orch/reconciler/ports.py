"""Host ports for local servers: unique in the database, never one already in use."""

from __future__ import annotations

import random
import socket
import uuid
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from chroma_orch.db.driver import driver
from chroma_orch.settings import Settings

_CANDIDATES_PER_CALL = 64


class NoPortAvailableError(Exception):
    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        """Seconds until a quarantined port of the pool is free again (None: the pool
        is simply full)."""


@dataclass(frozen=True)
class PortPool:
    """The ports local servers listen on: ``low..high`` on ``host``. A port one
    instance's server left is not given to another instance for ``quarantine``:
    authorisations cached for the instance that left (the built-in proxy's route
    cache, Nginx's auth cache) name that port, and must expire before another
    tenant's server may listen there."""

    host: str
    low: int
    high: int
    quarantine: timedelta


def port_pool(settings: Settings) -> PortPool:
    low, high = settings.local.ports
    quarantine = timedelta(seconds=settings.proxy.address_quarantine)
    return PortPool(settings.local.host, low, high, quarantine)


def recently_released_sql(
    host: int, quarantine: int, *columns: str, other_than: int | None = None
) -> str:
    """SQL: the ports of ``$host`` released within ``$quarantine`` (an interval), by
    any instance, or with ``other_than`` by instances other than ``$other_than``
    (an instance may take its own port back at once). The one statement of the
    quarantine rule: the claim, the guessed pick and the slow path all use it."""
    selected = ", ".join(("port", *columns))
    others = "" if other_than is None else f" AND instance_id <> ${other_than}"
    return (
        f"SELECT {selected} FROM released_endpoints WHERE host = ${host} "
        f"AND released_at > now() - ${quarantine}::interval{others}"
    )


async def quarantined_ports(
    session: AsyncSession, instance_id: uuid.UUID, pool: PortPool
) -> dict[int, float]:
    """Ports of the pool the instance may not take yet, with the seconds left: left
    by another instance less than the quarantine ago (its own are fine)."""
    con = await driver(session)
    left = "extract(epoch FROM released_at + $2::interval - now())::float8 AS left_s"
    sql = recently_released_sql(1, 2, left, other_than=3)
    found: dict[int, float] = {}
    for row in await con.fetch(sql, pool.host, pool.quarantine, instance_id):
        found[row["port"]] = max(found.get(row["port"], 0.0), row["left_s"])
    return found


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


async def allocate_port(session: AsyncSession, instance_id: uuid.UUID, pool: PortPool) -> int:
    """The instance's reserved port if nothing else listens on it, or a new free one
    of the pool, found by reading every taken and quarantined port. (The common
    case, a random pick reserved within the write that records "starting", is
    ``reconciler.queue.fenced_update``'s ``reserve_port``; this is what follows
    when that pick did not take.)"""
    con = await driver(session)
    rows = await con.fetch(
        "SELECT port, instance_id = $1 AS mine FROM allocated_ports "
        "WHERE instance_id = $1 OR port BETWEEN $2 AND $3",
        instance_id,
        pool.low,
        pool.high,
    )
    current = next((row["port"] for row in rows if row["mine"]), None)
    if current is not None:
        if port_is_free(pool.host, current):
            return int(current)
        await release_port(session, instance_id)
    taken = {row["port"] for row in rows}
    quarantined = await quarantined_ports(session, instance_id, pool)
    free = [p for p in range(pool.low, pool.high + 1) if p not in taken | quarantined.keys()]
    random.shuffle(free)  # replicas allocating at once rarely collide
    for port in free[:_CANDIDATES_PER_CALL]:
        if not port_is_free(pool.host, port):
            continue
        if await con.fetchval(_INSERT, port, instance_id) is not None:
            return port
    waits = [left for port, left in quarantined.items() if port not in taken]
    if waits:
        raise NoPortAvailableError(
            f"the free ports of {pool.low}-{pool.high} were left by other instances "
            "within the address quarantine",
            retry_after=min(waits),
        )
    raise NoPortAvailableError(f"no free port in {pool.low}-{pool.high}")


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
