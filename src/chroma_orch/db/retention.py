"""Rows past their retention: old events, settled intents, deleted instances, and
released addresses older than any quarantine.

A deleted instance's snapshots have archives in the snapshot store, which a row
deleted by cascade would leave behind: past retention, its snapshots are marked
``deleting`` first (the reconciler removes each archive, then its row), and the
instance's row goes only once it has no snapshot left, nor data its delete kept in
place for an undelete (``reconciler/kept_data_expiry.py`` removes that).

One pass (``Retention.run_once``) purges each kind in batches, each batch its own
short transaction, and one replica at a time: every batch first takes a
transaction-level advisory lock, and a replica that finds it held leaves the
pass to the one holding it (it will be back within its interval).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta

from sqlalchemy import (
    ColumnElement,
    Delete,
    and_,
    delete,
    func,
    literal_column,
    select,
    tuple_,
)
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chroma_orch.db import snapshot_rows
from chroma_orch.db.locks import LockKey, try_lock
from chroma_orch.db.models import (
    OPEN_INTENT,
    Event,
    Instance,
    Intent,
    ReleasedEndpoint,
    Snapshot,
    SnapshotPhase,
)
from chroma_orch.db.outbox import commit
from chroma_orch.db.rows import make_due
from chroma_orch.settings import MAX_ADDRESS_QUARANTINE_SECONDS, RetentionSettings

log = logging.getLogger(__name__)


def _events(older_than: timedelta, batch: int) -> Delete:
    """Events older than ``older_than``; the newest is always kept, so the log still
    tells which sequence number it has reached."""
    newest = select(func.max(Event.seq)).scalar_subquery()
    doomed = (
        select(Event.seq)
        .where(Event.created_at < func.now() - older_than, Event.seq < newest)
        .order_by(Event.seq)
        .limit(batch)
    )
    return delete(Event).where(Event.seq.in_(doomed.scalar_subquery()))


def _intents(older_than: timedelta, batch: int) -> Delete:
    """Intents settled longer than ``older_than`` ago (open ones always stay)."""
    doomed = (
        select(Intent.id)
        .where(Intent.completed_at < func.now() - older_than, Intent.status.not_in(OPEN_INTENT))
        .limit(batch)
    )
    return delete(Intent).where(Intent.id.in_(doomed.scalar_subquery()))


def past_retention(older_than: timedelta) -> ColumnElement[bool]:
    """Instances deleted longer than ``older_than`` ago and still meant to be (one
    undeleted at the window's end is not purged while the reconciler brings it back:
    its phase stays ``deleted`` until its server starts)."""
    return and_(
        # a literal, so the partial index ix_instances_deleted serves it
        Instance.phase == literal_column("'deleted'"),
        Instance.phase_changed_at < func.now() - older_than,
        Instance.desired_state == literal_column("'deleted'"),
    )


def _instances(older_than: timedelta, batch: int) -> Delete:
    """Instances deleted longer than ``older_than`` ago, with no snapshot left, no
    data kept for an undelete (``reconciler/kept_data_expiry.py`` removes it first),
    and their last request carried out (a purge's delete, removing that data, may be
    under way); their intents and port go with them (foreign keys cascade)."""
    snapshots = select(Snapshot.id).where(Snapshot.instance_id == Instance.id).exists()
    doomed = (
        select(Instance.id)
        .where(
            past_retention(older_than),
            ~snapshots,
            ~Instance.data_kept_for_undelete,
            Instance.observed_generation >= Instance.generation,
        )
        .limit(batch)
    )
    return delete(Instance).where(Instance.id.in_(doomed.scalar_subquery()))


RELEASED_ENDPOINTS_KEPT = timedelta(seconds=MAX_ADDRESS_QUARANTINE_SECONDS)
"""As long as any address quarantine may be."""


def _released_endpoints(older_than: timedelta, batch: int) -> Delete:
    """Addresses released longer ago than any quarantine (ECS task IPs seldom repeat,
    so the trigger's own clean-up of an address it records again rarely runs)."""
    doomed = (
        select(ReleasedEndpoint.host, ReleasedEndpoint.port, ReleasedEndpoint.instance_id)
        .where(ReleasedEndpoint.released_at < func.now() - older_than)
        .limit(batch)
    )
    key = (ReleasedEndpoint.host, ReleasedEndpoint.port, ReleasedEndpoint.instance_id)
    return delete(ReleasedEndpoint).where(tuple_(*key).in_(doomed))


class Retention:
    """Purges what is past its retention (see ``RetentionSettings``)."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        settings: RetentionSettings,
        events_hours: float,
    ) -> None:
        self.sessions = sessions
        self.batch = settings.batch
        self.kinds: dict[str, tuple[Callable[[timedelta, int], Delete], timedelta]] = {
            "events": (_events, timedelta(hours=events_hours)),
            "intents": (_intents, timedelta(hours=settings.settled_intents_hours)),
            "instances": (_instances, timedelta(hours=settings.deleted_instances_hours)),
            "released_endpoints": (_released_endpoints, RELEASED_ENDPOINTS_KEPT),
        }

    async def run_once(self) -> dict[str, int]:
        """One pass over every kind; how many rows of each were purged (none when
        another replica holds the pass)."""
        purged = dict.fromkeys(["snapshots", *self.kinds], 0)
        while True:
            marked = await self._mark_snapshots()
            if marked is None:
                return purged
            purged["snapshots"] += marked
            if marked < self.batch:
                break
        for kind, (statement, older_than) in self.kinds.items():
            while True:
                deleted = await self._batch(statement(older_than, self.batch))
                if deleted is None:  # another replica is purging
                    return purged
                purged[kind] += deleted
                if deleted < self.batch:
                    break
        if any(purged.values()):
            counts = " ".join(f"{kind}={count}" for kind, count in purged.items())
            log.info("purged rows past retention %s", counts)
        return purged

    async def _mark_snapshots(self) -> int | None:
        """One batch of the snapshots of instances past retention marked ``deleting``,
        and their instances due for the reconciler; None if the lock is held."""
        older_than = self.kinds["instances"][1]
        async with self.sessions() as session:
            if not await try_lock(session, LockKey.RETENTION):
                return None
            # the instances' rows before their snapshots', the order an undelete takes
            # them in (the other way round, the two deadlocked); one an undelete holds
            # is left for the next pass
            kept = select(Snapshot.id).where(
                Snapshot.instance_id == Instance.id,
                Snapshot.phase != SnapshotPhase.DELETING.value,
            )
            gone = list(
                await session.scalars(
                    select(Instance.id)
                    .where(past_retention(older_than), kept.exists())
                    .limit(self.batch)
                    .with_for_update(skip_locked=True)
                )
            )
            doomed = await snapshot_rows.purgeable(session, gone, limit=self.batch)
            for snapshot in doomed:
                await snapshot_rows.mark_deleting(session, snapshot)
            instance_ids = {snapshot.instance_id for snapshot in doomed}
            await make_due(session, instance_ids)
            await commit(session)
        return len(doomed)

    async def _batch(self, statement: Delete) -> int | None:
        """Run one batch under the lock: rows deleted, or None if the lock is held."""
        async with self.sessions() as session:
            if not await try_lock(session, LockKey.RETENTION):
                return None
            result = await session.execute(statement)
            await session.commit()
        return int(getattr(result, "rowcount", 0) or 0)
