"""Host ports of local servers in the database: which instance holds which port,
and the address quarantine (a port another instance's server left is not given
out again for ``proxy.address_quarantine``: authorisations cached for the
instance that left name that address).
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Float,
    Integer,
    Select,
    String,
    bindparam,
    cast,
    delete,
    exists,
    extract,
    func,
    or_,
    select,
)
from sqlalchemy.dialects.postgresql import INTERVAL
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chroma_orch.db.driver import driver
from chroma_orch.db.models import AllocatedPort, ReleasedEndpoint, table_of
from chroma_orch.db.statements import compiled
from chroma_orch.errors import NoPortAvailableError
from chroma_orch.settings import Settings

ALLOCATED = table_of(AllocatedPort)
RELEASED = table_of(ReleasedEndpoint)


def recently_released(
    *columns: ColumnElement[Any], other_than: ColumnElement[Any] | None = None
) -> Select[Any]:
    """The ports of ``:host`` released within ``:quarantine`` (an interval), by any
    instance, or with ``other_than`` by instances other than that one (an instance
    may take its own port back at once). The one definition of the quarantine
    rule: the guessed pick, the slow path and the tests all use it."""
    query = select(RELEASED.c.port, *columns).where(
        RELEASED.c.host == bindparam("host", type_=String),
        RELEASED.c.released_at > func.now() - bindparam("quarantine", type_=INTERVAL),
    )
    if other_than is not None:
        query = query.where(RELEASED.c.instance_id != other_than)
    return query


_LOW = bindparam("low", type_=Integer)
_HIGH = bindparam("high", type_=Integer)
_INSTANCE = bindparam("instance_id", type_=ALLOCATED.c.instance_id.type)
_LEFT = cast(
    extract("epoch", RELEASED.c.released_at + bindparam("quarantine", type_=INTERVAL) - func.now()),
    Float,
)

QUARANTINED = compiled(
    "quarantined_ports", recently_released(_LEFT.label("left_s"), other_than=_INSTANCE)
)
"""Ports the instance may not take yet, with the seconds left."""
TAKEN = compiled(
    "taken_ports",
    select(ALLOCATED.c.port, (ALLOCATED.c.instance_id == _INSTANCE).label("mine")).where(
        or_(
            ALLOCATED.c.instance_id == _INSTANCE,
            ALLOCATED.c.port.between(
                bindparam("low", type_=Integer), bindparam("high", type_=Integer)
            ),
        )
    ),
)
"""The ports of ``:low..:high`` held by any instance, and the instance's own."""
INSERT = compiled(
    "insert_port",
    pg_insert(ALLOCATED)
    .values(port=bindparam("port", type_=ALLOCATED.c.port.type), instance_id=_INSTANCE)
    .on_conflict_do_nothing()
    .returning(ALLOCATED.c.port),
)
"""Reserve ``:port`` for the instance; answers the port, or nothing if taken."""
HELD = compiled("held_port", select(ALLOCATED.c.port).where(ALLOCATED.c.instance_id == _INSTANCE))
RELEASE = compiled("release_port", delete(ALLOCATED).where(ALLOCATED.c.instance_id == _INSTANCE))


_FREE = func.generate_series(_LOW, _HIGH).table_valued("port").render_derived(name="candidate")
_HELD = select(ALLOCATED.c.port).where(ALLOCATED.c.instance_id == _INSTANCE).cte("held")
_PICK = (
    select(_FREE.c.port)
    .where(
        ~exists(select(_HELD.c.port)),
        _FREE.c.port.not_in(select(ALLOCATED.c.port)),
        # none recently released, not even its own: a fresh pick moves away from an
        # address that may still be in use (the slow path may give its own back)
        _FREE.c.port.not_in(recently_released()),
    )
    .order_by(func.random())  # replicas allocating at once rarely collide
    .limit(1)
    .cte("pick")
)
_RESERVED = (
    pg_insert(ALLOCATED)
    .from_select(["port", "instance_id"], select(_PICK.c.port, _INSTANCE))
    .on_conflict_do_nothing()
    .returning(ALLOCATED.c.port)
    .cte("reserved")
)
RESERVE = compiled(
    "reserve_port",
    select(
        func.coalesce(
            select(_HELD.c.port).scalar_subquery(), select(_RESERVED.c.port).scalar_subquery()
        ).label("port")
    ),
)
"""The instance's port, else a random free one of ``:low..:high`` that no instance
left within ``:quarantine`` on ``:host``, reserved; NULL when none."""


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

    def params(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "low": self.low,
            "high": self.high,
            "quarantine": self.quarantine,
        }


def port_pool(settings: Settings) -> PortPool:
    low, high = settings.local.ports
    quarantine = timedelta(seconds=settings.proxy.address_quarantine)
    return PortPool(settings.local.host, low, high, quarantine)


class PortReservationsInDb:
    """Ports reserved in ``allocated_ports``, unique across replicas, with the
    address quarantine (the local runtime's ``PortReservations``)."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], pool: PortPool) -> None:
        self.sessions = sessions
        self.pool = pool

    async def reserve(self, instance_id: str, usable: Callable[[int], bool]) -> int:
        """One statement in the common case (a random pick that ``usable`` accepts),
        else the slow path: every taken and quarantined port read, the free ones tried."""
        key = uuid.UUID(instance_id)
        async with self.sessions() as session:
            con = await driver(session, begin=False)
            port = await RESERVE.fetchval(con, instance_id=key, **self.pool.params())
            if port is None or not usable(port):
                port = await self._allocate(session, key, usable)
            await session.commit()
        return int(port)

    async def record(self, instance_id: str, port: int) -> None:
        key = uuid.UUID(instance_id)
        async with self.sessions() as session:
            con = await driver(session)
            if await HELD.fetchval(con, instance_id=key) != port:
                await RELEASE.execute(con, instance_id=key)
                await INSERT.fetchval(con, instance_id=key, port=port)
            await session.commit()

    async def _allocate(
        self, session: AsyncSession, instance_id: uuid.UUID, usable: Callable[[int], bool]
    ) -> int:
        """The instance's port if ``usable``, or a new usable one of the pool."""
        pool, con = self.pool, await driver(session)
        rows = await TAKEN.fetch(con, instance_id=instance_id, low=pool.low, high=pool.high)
        current = next((row["port"] for row in rows if row["mine"]), None)
        if current is not None:
            if usable(current):
                return int(current)
            await RELEASE.execute(con, instance_id=instance_id)
        taken = {row["port"] for row in rows}
        quarantined: dict[int, float] = {}
        found = await QUARANTINED.fetch(
            con, instance_id=instance_id, host=pool.host, quarantine=pool.quarantine
        )
        for row in found:
            quarantined[row["port"]] = max(quarantined.get(row["port"], 0.0), row["left_s"])
        free = [p for p in range(pool.low, pool.high + 1) if p not in taken | quarantined.keys()]
        random.shuffle(free)  # replicas allocating at once rarely collide
        for port in free[:_CANDIDATES_PER_CALL]:
            if usable(port) and await INSERT.fetchval(con, instance_id=instance_id, port=port):
                return port
        waits = [left for port, left in quarantined.items() if port not in taken]
        if waits:
            raise NoPortAvailableError(
                f"the free ports of {pool.low}-{pool.high} were left by other instances "
                "within the address quarantine",
                retry_after=min(waits),
            )
        raise NoPortAvailableError(f"no free port in {pool.low}-{pool.high}")


_CANDIDATES_PER_CALL = 64
