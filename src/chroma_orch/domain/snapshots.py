"""Snapshot requests: validate, write the snapshot row and its event, make the
instance due. The reconciler carries them out (``reconciler/snapshots.py``); nothing
here touches a store or a runtime. Services only flush; the caller commits.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from chroma_orch.db import rows, snapshot_rows
from chroma_orch.db.models import Instance, Intent, Snapshot
from chroma_orch.domain.instances import InstanceService
from chroma_orch.domain.principal import Principal
from chroma_orch.domain.schemas import FailureRead, SnapshotRead
from chroma_orch.domain.snapshot_access import restorable_snapshot, visible_snapshot
from chroma_orch.domain.snapshot_states import SnapshotKind, SnapshotPhase
from chroma_orch.domain.states import Action, DesiredState
from chroma_orch.errors import (
    ConflictError,
    NotFoundError,
    QuotaExceededError,
    SnapshotsUnsupportedError,
)
from chroma_orch.settings import Settings

QUOTA_KINDS = (SnapshotKind.MANUAL, SnapshotKind.SCHEDULED, SnapshotKind.IMPORT)
"""Kinds a tenant's quota refuses; the automatic safety snapshots (pre_delete,
pre_restore, pre_upgrade) are never refused (losing data is worse) but count."""


@dataclass(frozen=True)
class SnapshotPolicy:
    store: str
    """The store new snapshots go to (``snapshots.store``)."""
    max_per_tenant: int
    max_bytes_per_tenant: int
    max_import_bytes: int = 20 * 2**30
    """The largest archive an import takes."""
    can_snapshot: bool = True
    """Whether the runtime can copy its instances' data at all (False: ECS with EFS or
    ephemeral storage): without, no snapshot is taken or accepted."""


def snapshot_policy(settings: Settings, *, can_snapshot: bool = True) -> SnapshotPolicy:
    config = settings.snapshots
    return SnapshotPolicy(
        config.store,
        config.max_per_tenant,
        config.max_bytes_per_tenant,
        config.max_import_bytes,
        can_snapshot,
    )


def to_read(snapshot: Snapshot) -> SnapshotRead:
    failure = None
    if snapshot.failure_reason is not None:
        failure = FailureRead(
            reason=snapshot.failure_reason, message=snapshot.failure_message or ""
        )
    read = SnapshotRead.model_validate(snapshot)
    return read.model_copy(update={"failure": failure})


class SnapshotService:
    def __init__(
        self,
        session: AsyncSession,
        principal: Principal,
        instances: InstanceService,
        policy: SnapshotPolicy,
    ) -> None:
        self.session = session
        self.principal = principal
        self.instances = instances
        self.policy = policy

    async def request(
        self, instance_id: uuid.UUID, kind: SnapshotKind = SnapshotKind.MANUAL
    ) -> Snapshot:
        """A new snapshot of a visible, not deleted instance (404 otherwise), within
        the tenant's quota (429)."""
        instance = await self.instances.get(instance_id, for_update=True)
        if instance.desired_state == DesiredState.DELETED:
            raise NotFoundError(f"instance {instance_id} not found")
        self.require_capable()
        if kind in QUOTA_KINDS:
            await self.check_quota(instance.tenant_id)
        return await self.add(instance, kind)

    async def add(self, instance: Instance, kind: SnapshotKind) -> Snapshot:
        """Write a pending snapshot of ``instance`` (locked by the caller) and make the
        instance due."""
        store = self.policy.store
        return await snapshot_rows.add_pending(self.session, instance, kind.value, store)

    async def get(self, snapshot_id: uuid.UUID) -> Snapshot:
        return await visible_snapshot(self.session, self.principal, snapshot_id)

    async def list_for(self, instance_id: uuid.UUID) -> list[Snapshot]:
        """The instance's snapshots, newest first (a deleted instance's too: they are
        what an undelete restores)."""
        instance = await self.instances.get(instance_id, deleted=True)
        found = await self.session.scalars(
            select(Snapshot)
            .where(Snapshot.instance_id == instance.id)
            .order_by(Snapshot.created_at.desc(), Snapshot.id)
        )
        return list(found)

    async def delete(self, snapshot_id: uuid.UUID) -> Snapshot:
        """Mark the snapshot for deletion (its archive, then its row); repeatable.
        Locked first, so that a restore of it committed meanwhile is seen below
        (``domain/snapshot_access.py``); its instance's row before it, the order a
        restore and an undelete take the two in (taken the other way round, a restore
        of an instance from its own snapshot and this delete deadlocked)."""
        found = await self.get(snapshot_id)
        await rows.fetch_instance(self.session, found.instance_id, for_update=True)
        snapshot = await visible_snapshot(self.session, self.principal, snapshot_id, lock="update")
        if snapshot.phase == SnapshotPhase.DELETING:
            return snapshot
        if snapshot.phase in (SnapshotPhase.PENDING, SnapshotPhase.RUNNING):
            raise ConflictError(
                f"snapshot {snapshot_id} is being taken; delete it once it is ready or failed"
            )
        held = await snapshot_rows.holder(self.session, snapshot.id)
        if held is not None:
            raise ConflictError(f"snapshot {snapshot_id} cannot be deleted now: {held}")
        await snapshot_rows.mark_deleting(self.session, snapshot)
        await self.make_due(snapshot.instance_id)
        return snapshot

    async def restore(
        self, instance_id: uuid.UUID, snapshot_id: uuid.UUID
    ) -> tuple[Instance, Intent]:
        """Replace the instance's data with the snapshot's: a new generation; its
        current data is kept first as a ``pre_restore`` snapshot."""
        instance = await self.instances.get(instance_id, for_update=True)
        self.require_capable()
        await restorable_snapshot(self.session, self.principal, snapshot_id, instance.tenant_id)
        if instance.restore_snapshot_id is not None:
            raise ConflictError(f"instance {instance_id} is already being restored")
        await self.add(instance, SnapshotKind.PRE_RESTORE)
        applied = await self.instances.apply(instance, Action.RESTORE, restore_from=snapshot_id)
        assert applied is not None, "the instance is locked: its generation cannot move"
        return applied

    def require_capable(self) -> None:
        """``SnapshotsUnsupportedError`` (409) where the runtime cannot copy data."""
        if not self.policy.can_snapshot:
            raise SnapshotsUnsupportedError(
                f"the {self.instances.policy.runtime!r} runtime as configured keeps no copy of "
                "its instances' data (ECS with EFS or ephemeral storage): snapshots, restores "
                "and undeletes need ECS with managed EBS volumes (STORAGE=ebs) or the local runtime"
            )

    async def make_due(self, instance_id: uuid.UUID) -> None:
        """The reconciler looks at the instance now (on whichever replica)."""
        await rows.make_due(self.session, [instance_id])

    async def check_quota(self, tenant_id: uuid.UUID) -> None:
        """``QuotaExceededError`` when the tenant may keep no further snapshot."""
        count, size = (
            await self.session.execute(
                select(func.count(), func.coalesce(func.sum(Snapshot.size_bytes), 0)).where(
                    Snapshot.tenant_id == tenant_id
                )
            )
        ).one()
        size = int(size or 0)
        policy = self.policy
        if count >= policy.max_per_tenant:
            raise QuotaExceededError(
                f"tenant has {count} snapshots; the limit is {policy.max_per_tenant}"
            )
        if size >= policy.max_bytes_per_tenant:
            raise QuotaExceededError(
                f"tenant's snapshots take {size} bytes; the limit is {policy.max_bytes_per_tenant}"
            )
