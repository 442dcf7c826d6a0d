"""Rows of the tables written beside an instance (snapshots, upgrades): a new one with
its ``<kind>.created`` event, and a change fenced on the instance's lease with its
``<kind>.phase_changed`` event."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol, TypeVar

from sqlalchemy import ColumnElement, exists, func, update
from sqlalchemy.ext.asyncio import AsyncSession

from chroma_orch.db.instance_writes import Fence
from chroma_orch.db.models import Instance
from chroma_orch.db.outbox import record_event


class InstanceRow(Protocol):
    """A row that belongs to an instance and keeps when it was updated."""

    id: Any
    instance_id: Any
    tenant_id: Any


R = TypeVar("R", bound=InstanceRow)


async def add_row(
    session: AsyncSession, row: R, *, view: Callable[[Any], dict[str, Any]], event: str
) -> R:
    """Insert ``row`` (flushed, not committed) with the ``event`` showing ``view`` of it."""
    session.add(row)
    await session.flush()
    record_event(
        session,
        type=event,
        instance_id=row.instance_id,
        tenant_id=row.tenant_id,
        after=view(row),
    )
    return row


def fenced(fence: Fence) -> ColumnElement[bool]:
    """True while ``fence``'s replica holds its instance's lease."""
    return exists().where(Instance.id == fence.instance_id, Instance.lease_owner == fence.owner)


async def change_row(
    session: AsyncSession,
    row: InstanceRow,
    values: Mapping[str, Any],
    *,
    fence: Fence | None,
    view: Callable[[Any], dict[str, Any]],
    event: str,
) -> bool:
    """Write ``values`` to ``row`` (while ``fence`` holds the lease, when given), with
    the ``event`` saying what ``view`` shows changed; False when the fence was lost."""
    model: Any = type(row)
    before = view(row)
    statement = update(model).where(model.id == row.id)
    if fence is not None:
        statement = statement.where(fenced(fence))
    result = await session.execute(
        statement.values(**values, updated_at=func.now()).returning(model.id)
    )
    if result.scalar_one_or_none() is None:
        return False
    for key, value in values.items():
        setattr(row, key, value)
    if before != view(row):
        record_event(
            session,
            type=event,
            instance_id=row.instance_id,
            tenant_id=row.tenant_id,
            before=before,
            after=view(row),
        )
    return True
