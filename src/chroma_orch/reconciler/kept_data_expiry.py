"""Data a delete kept in place only for an undelete, removed once the undelete's
window has passed.

A delete whose ``pre_delete`` snapshot failed keeps the instance's data where it is
rather than lose it (``data_kept_for_undelete``): an undelete starts on it. Once the
instance is past the retention of deleted instances, it cannot be undeleted any more,
and that data is purged as ``DELETE /v1/instances/{id}?purge=true`` purges it: a new
generation whose delete the reconciler carries out with ``keep_data=false``, and
every snapshot of the instance ``deleting``. The retention pass deletes the row only
after that (``db/retention.py``). Before, it deleted the row and left the data on the
runtime's storage (a local data directory, an EFS access point, EBS volumes and
snapshots) with nothing pointing at it. Data kept on request (``keep_data=true``)
stays, as documented.

One batch at a time, each its own transaction under the retention's lock (one replica
at a time; another finds it held and leaves the pass to it).
"""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chroma_orch.db.locks import LockKey, try_lock
from chroma_orch.db.models import Instance
from chroma_orch.db.outbox import commit
from chroma_orch.db.retention import past_retention
from chroma_orch.domain.deletion import DeletionService
from chroma_orch.domain.instances import InstancePolicy, InstanceService
from chroma_orch.domain.principal import SYSTEM
from chroma_orch.domain.snapshots import SnapshotPolicy, SnapshotService

log = logging.getLogger(__name__)

_BATCH = 500
"""Instances purged per transaction (each is a delete's few statements)."""


class KeptDataExpiry:
    """Purges the data deleted instances kept for an undelete, past its window."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        instance_policy: InstancePolicy,
        snapshot_policy: SnapshotPolicy,
        deleted_instances_hours: float,
    ) -> None:
        self.sessions = sessions
        self.instance_policy = instance_policy
        self.snapshot_policy = snapshot_policy
        self.older_than = timedelta(hours=deleted_instances_hours)

    async def run_once(self) -> list[uuid.UUID]:
        """Every instance due a purge of its kept data (none when another replica holds
        the pass): the instances purged."""
        purged: list[uuid.UUID] = []
        while True:
            batch = await self._batch()
            if batch is None:
                break
            purged += batch
            if len(batch) < _BATCH:
                break
        if purged:
            log.info("purging data kept for an undelete past retention count=%d", len(purged))
        return purged

    async def _batch(self) -> list[uuid.UUID] | None:
        async with self.sessions() as session:
            if not await try_lock(session, LockKey.RETENTION):
                return None
            expired = list(
                await session.scalars(
                    select(Instance.id)
                    .where(
                        past_retention(self.older_than),
                        Instance.data_kept_for_undelete,
                        # still kept: once the purge is asked, until its delete is done
                        Instance.keep_data,
                    )
                    .limit(_BATCH)
                    .with_for_update(skip_locked=True)
                )
            )
            instances = InstanceService(session, SYSTEM, self.instance_policy)
            snapshots = SnapshotService(session, SYSTEM, instances, self.snapshot_policy)
            deletions = DeletionService(snapshots)
            for instance_id in expired:
                await deletions.delete(instance_id, keep_data=False, purge=True)
            await commit(session)
        return expired
