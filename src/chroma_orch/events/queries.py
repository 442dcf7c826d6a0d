"""All SQL of the event stream: reading the log by sequence, snapshots (pruning is
``db.retention``'s)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chroma_orch.db import outbox
from chroma_orch.db.models import Event, Instance
from chroma_orch.domain.instances import InstancePolicy, to_read
from chroma_orch.domain.principal import Principal
from chroma_orch.domain.schemas import InstanceRead
from chroma_orch.domain.states import Phase
from chroma_orch.events.messages import EventMessage


@dataclass(frozen=True)
class Scope:
    """What one subscriber may see: a tenant (None: all, for admins) and
    optionally one instance."""

    tenant_id: uuid.UUID | None
    instance_id: uuid.UUID | None = None

    @classmethod
    def of(cls, principal: Principal, instance_id: uuid.UUID | None = None) -> Scope:
        return cls(None if principal.is_admin else principal.tenant_id, instance_id)

    def sees(self, tenant_id: uuid.UUID | None, instance_id: uuid.UUID | None) -> bool:
        if self.tenant_id is not None and tenant_id != self.tenant_id:
            return False
        return self.instance_id is None or instance_id == self.instance_id


def to_message(row: Event) -> EventMessage:
    return EventMessage(
        seq=row.seq,
        event=row.type,
        instance_id=row.instance_id,
        tenant_id=row.tenant_id,
        before=row.before,
        after=row.after,
        created_at=row.created_at,
    )


async def read_events(
    session: AsyncSession,
    after: int,
    limit: int,
    *,
    upto: int | None = None,
    scope: Scope | None = None,
) -> list[Event]:
    """Events with ``after < seq <= upto`` in order, at most ``limit``, optionally
    only those ``scope`` sees."""
    query = select(Event).where(Event.seq > after)
    if upto is not None:
        query = query.where(Event.seq <= upto)
    if scope is not None and scope.tenant_id is not None:
        query = query.where(Event.tenant_id == scope.tenant_id)
    if scope is not None and scope.instance_id is not None:
        query = query.where(Event.instance_id == scope.instance_id)
    return list(await session.scalars(query.order_by(Event.seq).limit(limit)))


async def log_bounds(session: AsyncSession) -> tuple[int | None, int | None]:
    """The oldest and newest sequence numbers still in the log."""
    row = (await session.execute(select(func.min(Event.seq), func.max(Event.seq)))).one()
    return row[0], row[1]


async def newest_seq(sessions: async_sessionmaker[AsyncSession]) -> int:
    """The newest sequence number in the log (0: none yet): where a snapshot without
    instances (``snapshot=none``) is taken."""
    async with sessions() as session:
        seq = await outbox.newest_seq(session)
        await session.commit()
    return seq


async def snapshot(
    sessions: async_sessionmaker[AsyncSession], scope: Scope, policy: InstancePolicy
) -> tuple[int, list[InstanceRead]]:
    """The visible instances and the sequence number they are valid at, read in one
    REPEATABLE READ transaction: events commit with the changes they describe, so
    the instances include every event up to that number and none after it."""
    async with sessions() as session:
        await session.connection(
            execution_options={"isolation_level": "REPEATABLE READ", "postgresql_readonly": True}
        )
        seq = await outbox.newest_seq(session)
        query = select(Instance).where(Instance.phase != Phase.DELETED)
        if scope.tenant_id is not None:
            query = query.where(Instance.tenant_id == scope.tenant_id)
        if scope.instance_id is not None:
            query = query.where(Instance.id == scope.instance_id)
        rows = await session.scalars(query.order_by(Instance.created_at, Instance.id))
        instances = [to_read(row, policy) for row in rows]
        await session.commit()
    return seq, instances
