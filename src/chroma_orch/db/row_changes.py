"""Rows of the tables written beside an instance (snapshots, upgrades): a new one with
its ``<kind>.created`` event, and a change fenced on the instance's lease with its
``<kind>.phase_changed`` event."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol, TypeVar

from sqlalchemy import ColumnElement, case, exists, func, literal, update
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
    final: tuple[str, Any] | None = None,
) -> bool:
    """Write ``values`` to ``row`` (while ``fence`` holds the lease, when given), with
    the ``event`` saying what ``view`` shows changed; False when the fence was lost.

    ``final``: a column and the value a row keeps once it has it (a snapshot's
    ``deleting``, which the API writes while the reconciler works on the row). A
    write of that column to a row that holds it leaves it, decided by the UPDATE on
    the row as committed; ``row`` shows what the row holds, and the other values are
    written."""
    model: Any = type(row)
    written: dict[str, Any] = dict(values)
    kept = final if final is not None and values.get(final[0], final[1]) != final[1] else None
    returning = [model.id]
    if kept is not None:  # a write of another value to that column
        column = getattr(model, kept[0])
        written[kept[0]] = case(
            (column == kept[1], column), else_=literal(values[kept[0]], column.type)
        )
        returning.append(column)
    statement = update(model).where(model.id == row.id)
    if fence is not None:
        statement = statement.where(fenced(fence))
    result = await session.execute(
        statement.values(**written, updated_at=func.now()).returning(*returning)
    )
    found = result.one_or_none()
    if found is None:
        return False
    if kept is not None and found[1] == kept[1]:  # the row held it: it stays
        setattr(row, kept[0], kept[1])
        values = {**values, kept[0]: kept[1]}
    before = view(row)
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
