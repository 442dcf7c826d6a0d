"""The snapshot scheduler: takes the ``scheduled`` snapshots that are due and prunes
the ones past their schedule's ``keep``, one replica at a time.

A pass holds the advisory lock ``LockKey.SCHEDULER`` and works in batches, each its
own transaction. Each due instance gets one snapshot through the path a manual one
takes (``SnapshotService``: a pending row, the instance made due for the reconciler,
which snapshots a stopped instance without starting it), and its next time one
period from now: after downtime, the missed runs are caught up once. Its ready
scheduled snapshots past ``keep`` become ``deleting`` (the reconciler removes their
archives, then their rows).
"""

from __future__ import annotations

import logging
import uuid

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chroma_orch.db import snapshot_rows
from chroma_orch.db import snapshot_schedules as schedules
from chroma_orch.db.locks import LockKey, try_lock
from chroma_orch.db.outbox import commit
from chroma_orch.domain.instances import InstancePolicy, InstanceService
from chroma_orch.domain.principal import SYSTEM
from chroma_orch.domain.snapshot_states import SnapshotKind
from chroma_orch.domain.snapshots import SnapshotPolicy, SnapshotService
from chroma_orch.domain.states import DesiredState
from chroma_orch.errors import QuotaExceededError

log = logging.getLogger(__name__)


class SnapshotScheduler:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        instances: InstancePolicy,
        snapshots: SnapshotPolicy,
        batch: int = 500,
    ) -> None:
        self.sessions = sessions
        self.instance_policy = instances
        self.snapshot_policy = snapshots
        self.batch = batch

    async def run_once(self) -> list[uuid.UUID]:
        """One pass: the instances a scheduled snapshot was requested for (none when
        another replica holds the pass)."""
        taken: list[uuid.UUID] = []
        while True:
            batch = await self._batch()
            if batch is None:
                break
            taken += batch[0]
            if batch[1] < self.batch:
                break
        if taken:
            log.info("scheduled snapshots requested count=%d", len(taken))
        return taken

    async def _batch(self) -> tuple[list[uuid.UUID], int] | None:
        """One batch under the lock: the instances snapshotted and how many were due;
        None when another replica holds the lock."""
        async with self.sessions() as session:
            if not await try_lock(session, LockKey.SCHEDULER):
                return None
            await schedules.cover(session)
            due = await schedules.due(session, self.batch)
            service = SnapshotService(
                session,
                SYSTEM,
                InstanceService(session, SYSTEM, self.instance_policy),
                self.snapshot_policy,
            )
            taken = [item.instance.id for item in due if await _run(service, item)]
            await commit(session)
        return taken, len(due)


async def _run(service: SnapshotService, item: schedules.Due) -> bool:
    """Prune and snapshot one due instance; whether a snapshot was requested."""
    instance, session = item.instance, service.session
    if (
        item.every_seconds is None
        or item.keep is None
        or (instance.desired_state == DesiredState.DELETED)
        or not service.policy.can_snapshot
    ):
        await schedules.advance(session, instance.id, None)  # nothing applies any more
        return False
    pruned = await schedules.beyond_keep(session, instance.id, item.keep)
    for old in pruned:
        await snapshot_rows.mark_deleting(session, old)
    await schedules.advance(session, instance.id, item.every_seconds)
    try:
        await service.check_quota(instance.tenant_id)
    except QuotaExceededError as exc:
        log.warning("scheduled snapshot skipped instance=%s reason=%s", instance.id, exc)
        if pruned:
            await service.make_due(instance.id)
        return False
    await service.add(instance, SnapshotKind.SCHEDULED)
    return True
