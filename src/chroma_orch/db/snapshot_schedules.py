"""Snapshot schedules: their rows, and the statements the scheduler runs each pass.

An instance's schedule is its own, else its tenant's. ``instances.next_snapshot_at``
holds when its next ``scheduled`` snapshot is due, so a pass costs one index range
scan however many instances there are: ``cover`` gives a time to the live instances a
schedule applies to and that have none yet (new ones), ``due`` locks those whose time
has come (``FOR UPDATE SKIP LOCKED``: an instance a request holds waits for the next
pass), and ``advance`` sets the next time one period from now (after downtime, the
missed runs are caught up once, not once per missed period).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, and_, delete, func, literal_column, or_, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from chroma_orch.db.models import Instance, Snapshot, SnapshotKind, SnapshotPhase, SnapshotSchedule
from chroma_orch.db.rows import INSTANCES, instance_of
from chroma_orch.db.snapshot_rows import not_restoring

_LIVE = Instance.desired_state != literal_column("'deleted'")  # the partial index's own words


@dataclass(frozen=True)
class Due:
    """An instance whose scheduled snapshot is due, with its schedule (None: no schedule
    applies any more)."""

    instance: Instance
    every_seconds: int | None
    keep: int | None


def _tenant_wide(tenant_id: ColumnElement[uuid.UUID] | uuid.UUID) -> ColumnElement[bool]:
    return and_(SnapshotSchedule.tenant_id == tenant_id, SnapshotSchedule.instance_id.is_(None))


async def find(
    session: AsyncSession, tenant_id: uuid.UUID, instance_id: uuid.UUID | None
) -> SnapshotSchedule | None:
    """The tenant's own schedule (``instance_id`` None) or the instance's own."""
    where = (
        _tenant_wide(tenant_id)
        if instance_id is None
        else SnapshotSchedule.instance_id == instance_id
    )
    return (await session.scalars(select(SnapshotSchedule).where(where))).first()


async def save(
    session: AsyncSession,
    tenant_id: uuid.UUID,
    instance_id: uuid.UUID | None,
    every_seconds: int,
    keep: int,
) -> SnapshotSchedule:
    """Create or replace the tenant's or the instance's schedule."""
    target = "instance_id IS NULL" if instance_id is None else "instance_id IS NOT NULL"
    statement = (
        insert(SnapshotSchedule)
        .values(
            id=uuid.uuid4(),
            tenant_id=tenant_id,
            instance_id=instance_id,
            every_seconds=every_seconds,
            keep=keep,
        )
        .on_conflict_do_update(
            index_elements=["tenant_id" if instance_id is None else "instance_id"],
            index_where=literal_column(target),
            set_={"every_seconds": every_seconds, "keep": keep, "updated_at": func.now()},
        )
        .returning(SnapshotSchedule)
    )
    saved = (await session.scalars(statement, execution_options={"populate_existing": True})).one()
    return saved


async def remove(
    session: AsyncSession, tenant_id: uuid.UUID, instance_id: uuid.UUID | None
) -> None:
    where = (
        _tenant_wide(tenant_id)
        if instance_id is None
        else SnapshotSchedule.instance_id == instance_id
    )
    await session.execute(delete(SnapshotSchedule).where(where))


def _own_schedule() -> ColumnElement[bool]:
    return select(SnapshotSchedule.id).where(SnapshotSchedule.instance_id == Instance.id).exists()


async def reschedule(
    session: AsyncSession,
    tenant_id: uuid.UUID,
    instance_id: uuid.UUID | None,
    every_seconds: int | None,
) -> None:
    """After a schedule changed: the instances it covers (the one, or the tenant's
    live ones without a schedule of their own) take their next snapshot no later than
    one new period from now (at once, for one not covered before); with
    ``every_seconds`` None (cleared), none is due any more."""
    if instance_id is None:
        where = and_(Instance.tenant_id == tenant_id, _LIVE, ~_own_schedule())
    else:
        where = Instance.id == instance_id
    if every_seconds is None:
        when: ColumnElement[datetime | None] | None = None
    else:
        period = func.make_interval(0, 0, 0, 0, 0, 0, every_seconds)
        when = func.least(func.coalesce(Instance.next_snapshot_at, func.now()), func.now() + period)
    await session.execute(update(Instance).where(where).values(next_snapshot_at=when))


async def cover(session: AsyncSession) -> int:
    """Live instances a schedule applies to and that have no next time yet (created
    since, or covered by a schedule set meanwhile) are due at once; how many."""
    tenants = select(SnapshotSchedule.tenant_id).where(SnapshotSchedule.instance_id.is_(None))
    own = select(SnapshotSchedule.instance_id).where(SnapshotSchedule.instance_id.is_not(None))
    result = await session.execute(
        update(Instance)
        .where(
            Instance.next_snapshot_at.is_(None),
            _LIVE,
            or_(Instance.tenant_id.in_(tenants), Instance.id.in_(own)),
        )
        .values(next_snapshot_at=func.now())
    )
    return int(getattr(result, "rowcount", 0) or 0)


async def due(session: AsyncSession, batch: int) -> list[Due]:
    """Up to ``batch`` instances whose scheduled snapshot is due, locked, oldest due
    first, with the schedule that applies to each."""
    own, tenant = aliased(SnapshotSchedule), aliased(SnapshotSchedule)
    query = (
        select(
            INSTANCES,
            func.coalesce(own.every_seconds, tenant.every_seconds).label("every_seconds"),
            func.coalesce(own.keep, tenant.keep).label("keep"),
        )
        .outerjoin(own, own.instance_id == INSTANCES.c.id)
        .outerjoin(
            tenant,
            and_(tenant.tenant_id == INSTANCES.c.tenant_id, tenant.instance_id.is_(None)),
        )
        .where(INSTANCES.c.next_snapshot_at <= func.now())
        .order_by(INSTANCES.c.next_snapshot_at)
        .limit(batch)
        .with_for_update(of=INSTANCES, skip_locked=True)
    )
    found = await session.execute(query)
    return [Due(instance_of(row._mapping), row.every_seconds, row.keep) for row in found]


async def advance(session: AsyncSession, instance_id: uuid.UUID, every_seconds: int | None) -> None:
    """The instance's next scheduled snapshot: one period from now (None: none)."""
    when = None
    if every_seconds is not None:
        when = func.now() + func.make_interval(0, 0, 0, 0, 0, 0, every_seconds)
    await session.execute(
        update(Instance).where(Instance.id == instance_id).values(next_snapshot_at=when)
    )


async def keep_of(
    session: AsyncSession, tenant_id: uuid.UUID, instance_id: uuid.UUID
) -> int | None:
    """The ``keep`` of the schedule that applies to the instance (None: none does)."""
    own = await find(session, tenant_id, instance_id)
    applies = own or await find(session, tenant_id, None)
    return applies.keep if applies is not None else None


async def beyond_keep(session: AsyncSession, instance_id: uuid.UUID, keep: int) -> list[Snapshot]:
    """The instance's scheduled snapshots to prune: the ready ones older than its
    newest ``keep`` ready ones, and the failed ones older than its newest ready one
    (a failed run never costs a good snapshot). Never one an instance is restoring."""
    scheduled = and_(
        Snapshot.instance_id == instance_id, Snapshot.kind == SnapshotKind.SCHEDULED.value
    )
    ready = (
        select(Snapshot)
        .where(scheduled, Snapshot.phase == SnapshotPhase.READY.value)
        .order_by(Snapshot.created_at.desc(), Snapshot.id)
    )
    # locked, and those a restore holds (``FOR SHARE``) skipped: kept this time
    old_ready = list(await session.scalars(ready.offset(keep).with_for_update(skip_locked=True)))
    newest = (await session.scalars(ready.limit(1))).first()
    old_failed: list[Snapshot] = []
    if newest is not None:
        old_failed = list(
            await session.scalars(
                select(Snapshot)
                .where(
                    scheduled,
                    Snapshot.phase == SnapshotPhase.FAILED.value,
                    Snapshot.created_at < newest.created_at,
                )
                .with_for_update(skip_locked=True)
            )
        )
    return await not_restoring(session, old_ready + old_failed)
