"""Snapshot rows: what the API writes, and the reconciler's fenced writes.

The reconciler changes a snapshot only while it holds the lease of the snapshot's
instance (``Fence``): a replica that lost the lease writes nothing, like its
instance writes (``db/instance_writes.py``). Each write queues its event; the
caller commits through ``db.outbox.commit``.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Select,
    and_,
    bindparam,
    delete,
    exists,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession

from chroma_orch.db.driver import driver
from chroma_orch.db.instance_writes import Fence
from chroma_orch.db.models import (
    OPEN_SNAPSHOT,
    OPEN_UPGRADE,
    Instance,
    InstanceUpgrade,
    Snapshot,
    SnapshotPhase,
    due_now,
    loaded,
    table_of,
)
from chroma_orch.db.outbox import (
    INTENTS_CHANNEL,
    appending,
    event_row,
    record_event,
    write_with_events,
)
from chroma_orch.db.row_changes import add_row, change_row, fenced
from chroma_orch.db.statements import Statement, compiled, one_of


def snapshot_view(snapshot: Snapshot) -> dict[str, Any]:
    """What events say of a snapshot (its phase and what it became)."""
    return {
        "id": str(snapshot.id),
        "kind": snapshot.kind,
        "phase": snapshot.phase,
        "failure_reason": snapshot.failure_reason,
        "size_bytes": snapshot.size_bytes,
        "checksum": snapshot.checksum,
    }


_SNAPSHOTS = table_of(Snapshot)
_ANY_OPEN = compiled(
    "snapshot_open",
    select(
        exists().where(
            _SNAPSHOTS.c.instance_id
            == bindparam("instance_id", type_=_SNAPSHOTS.c.instance_id.type),
            one_of(_SNAPSHOTS.c.phase, [phase.value for phase in OPEN_SNAPSHOT]),
        )
    ),
)


async def next_open(session: AsyncSession, instance_id: uuid.UUID) -> Snapshot | None:
    """The instance's oldest snapshot the reconciler has yet to carry out.

    Passes ask this of every instance they reconcile, and most have none: one compiled
    statement on the driver says so (``db/statements.py``), and only an instance that
    has one pays for the ORM read. Like every driver read, it sees what was sent to the
    database, not objects still pending in ``session``."""
    if not await _ANY_OPEN.fetchval(await driver(session, begin=False), instance_id=instance_id):
        return None
    restored = exists().where(Instance.restore_snapshot_id == Snapshot.id)
    query = (
        select(Snapshot)
        .where(
            Snapshot.instance_id == instance_id,
            Snapshot.phase.in_(OPEN_SNAPSHOT),
            # never the data a restore still loads: its delete waits until that is done
            ~and_(Snapshot.phase == SnapshotPhase.DELETING.value, restored),
        )
        .order_by(Snapshot.created_at, Snapshot.id)
        .limit(1)
    )
    return (await session.scalars(query)).first()


async def newest_phase(
    session: AsyncSession, instance_id: uuid.UUID, kind: str, since: ColumnElement[datetime]
) -> str | None:
    """The phase of the instance's newest snapshot of ``kind`` taken at or after
    ``since`` (every one when that is NULL: no intent left to tell), or None if it has
    none: whether the snapshot a delete or a restore took first failed (the data then
    stays in place)."""
    query = (
        select(Snapshot.phase)
        .where(Snapshot.instance_id == instance_id, Snapshot.kind == kind)
        .where(or_(since.is_(None), Snapshot.created_at >= since))
    )
    return await session.scalar(query.order_by(Snapshot.created_at.desc()).limit(1))


async def capture_open(session: AsyncSession, instance_id: uuid.UUID) -> bool:
    """Whether a snapshot of the instance waits for its capture or is being captured
    (its server may be stopped for the copy, and started again at once)."""
    capturing = (SnapshotPhase.PENDING, SnapshotPhase.RUNNING)
    query = select(
        exists().where(Snapshot.instance_id == instance_id, Snapshot.phase.in_(capturing))
    )
    return bool(await session.scalar(query))


async def add(session: AsyncSession, snapshot: Snapshot) -> Snapshot:
    """A new snapshot row and its ``snapshot.created`` event."""
    return await add_row(session, snapshot, view=snapshot_view, event="snapshot.created")


_PENDING_COLUMNS = ("id", "instance_id", "tenant_id", "kind", "phase", "store", "attempts")


def _add_pending() -> Statement:
    """A pending snapshot, its instance made due (``least``: never later than it was),
    and their event and notification, in one statement."""
    values = {name: bindparam(name, type_=_SNAPSHOTS.c[name].type) for name in _PENDING_COLUMNS}
    snapshot = (
        insert(_SNAPSHOTS)
        .values(values)
        .returning(_SNAPSHOTS.c.id, _SNAPSHOTS.c.created_at, _SNAPSHOTS.c.updated_at)
        .cte("snapshot")
    )
    instances = table_of(Instance)
    due = (
        update(instances)
        .where(instances.c.id == values["instance_id"])
        .values(next_reconcile_at=due_now())
        .returning(instances.c.id)
        .cte("due")
    )
    events = appending(snapshot)
    query = select(snapshot, *events.items).add_cte(due, *events.ctes)
    return compiled("add_pending_snapshot", query)


_ADD_PENDING = _add_pending()


async def add_pending(session: AsyncSession, instance: Instance, kind: str, store: str) -> Snapshot:
    """A new pending snapshot of ``instance`` (locked by the caller) in ``store``, its
    ``snapshot.created`` event, and the instance due at once so that a reconciler
    (on whichever replica: the intents channel is notified) carries it out. One
    statement in the caller's transaction, where ``add`` and a make-due took two
    through the ORM and the event a round trip of its own."""
    values = {
        "id": uuid.uuid4(),
        "instance_id": instance.id,
        "tenant_id": instance.tenant_id,
        "kind": kind,
        "phase": SnapshotPhase.PENDING.value,
        "store": store,
        "attempts": 0,
    }
    columns: dict[str, Any] = dict.fromkeys(_SNAPSHOTS.c.keys()) | values
    created = event_row(
        type="snapshot.created",
        instance_id=instance.id,
        tenant_id=instance.tenant_id,
        after=snapshot_view(loaded(Snapshot, columns)),
    )
    row = await write_with_events(
        session,
        _ADD_PENDING,
        values,
        events=[created],
        notify={INTENTS_CHANNEL: str(instance.id)},
        begin=True,
    )
    assert row is not None
    stamps = {"created_at": row["created_at"], "updated_at": row["updated_at"]}
    return loaded(Snapshot, columns | stamps)


async def purgeable(
    session: AsyncSession,
    instance_ids: Sequence[uuid.UUID] | Select[Any],
    limit: int | None = None,
    *,
    skip_locked: bool = True,
) -> list[Snapshot]:
    """The snapshots of these instances a purge marks ``deleting`` (locked): all not
    already so, but those an instance is restoring. Those another transaction holds
    (a restore naming one, the reconciler writing one) are left for later, or with
    ``skip_locked=False`` waited for: a tenant's purge leaves none behind."""
    found = await session.scalars(
        select(Snapshot)
        .where(
            Snapshot.instance_id.in_(instance_ids),
            Snapshot.phase != SnapshotPhase.DELETING.value,
        )
        .order_by(Snapshot.created_at)
        .limit(limit)
        .with_for_update(skip_locked=skip_locked)
    )
    return await not_restoring(session, list(found))


async def not_restoring(session: AsyncSession, snapshots: Sequence[Snapshot]) -> list[Snapshot]:
    """Those of ``snapshots`` (locked by the caller) no instance is restoring. Asked
    in a statement of its own, after the lock: it sees a restore committed while the
    caller waited for it (``domain/snapshot_access.py``)."""
    if not snapshots:
        return []
    in_use = set(
        await session.scalars(
            select(Instance.restore_snapshot_id).where(
                Instance.restore_snapshot_id.in_([snapshot.id for snapshot in snapshots])
            )
        )
    )
    return [snapshot for snapshot in snapshots if snapshot.id not in in_use]


async def holder(session: AsyncSession, snapshot_id: uuid.UUID) -> str | None:
    """What still needs this snapshot's data, worded for a 409, or None: an instance
    restoring it, or an open upgrade whose rollback would restore it."""
    restoring = await session.scalar(
        select(Instance.id).where(Instance.restore_snapshot_id == snapshot_id).limit(1)
    )
    if restoring is not None:
        return f"instance {restoring} is restoring it"
    upgrade = await session.scalar(
        select(InstanceUpgrade.id)
        .where(
            InstanceUpgrade.snapshot_id == snapshot_id,
            InstanceUpgrade.phase.in_([phase.value for phase in OPEN_UPGRADE]),
        )
        .limit(1)
    )
    if upgrade is not None:
        return f"upgrade {upgrade} is under way and would restore it on a rollback"
    return None


async def mark_deleting(session: AsyncSession, snapshot: Snapshot) -> None:
    """A DELETE: the reconciler removes the archive, then the row."""
    await change(session, snapshot, {"phase": SnapshotPhase.DELETING.value})


async def change(
    session: AsyncSession,
    snapshot: Snapshot,
    values: Mapping[str, Any],
    fence: Fence | None = None,
) -> bool:
    """Write ``values`` to ``snapshot`` (fenced on ``fence`` when given) with its
    ``snapshot.phase_changed`` event; False when the fence was lost. A snapshot
    marked ``deleting`` (a purge while the reconciler takes it) stays so, its other
    values written: a capture that finished meanwhile records where its archive went,
    for the delete to remove; ``snapshot.phase`` then says ``deleting``."""
    return await change_row(
        session,
        snapshot,
        values,
        fence=fence,
        view=snapshot_view,
        event="snapshot.phase_changed",
        final=("phase", SnapshotPhase.DELETING.value),
    )


async def remove(session: AsyncSession, snapshot: Snapshot, fence: Fence) -> bool:
    """Delete the row (its archive is gone) with its ``snapshot.deleted`` event."""
    result = await session.execute(
        delete(Snapshot).where(Snapshot.id == snapshot.id, fenced(fence)).returning(Snapshot.id)
    )
    if result.scalar_one_or_none() is None:
        return False
    record_event(
        session,
        type="snapshot.deleted",
        instance_id=snapshot.instance_id,
        tenant_id=snapshot.tenant_id,
        before=snapshot_view(snapshot),
    )
    return True
