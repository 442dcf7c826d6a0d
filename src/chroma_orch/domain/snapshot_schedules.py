"""Snapshot schedules through the API: set, read and clear a tenant's or an
instance's schedule (an instance's own overrides its tenant's). Services only
flush; the caller commits. The scheduler itself is ``reconciler/snapshot_scheduler.py``.
"""

from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncSession

from chroma_orch.db import snapshot_schedules as schedules
from chroma_orch.db.models import Instance, SnapshotSchedule, Tenant
from chroma_orch.domain.instances import InstanceService
from chroma_orch.domain.principal import Principal
from chroma_orch.domain.schemas import SnapshotScheduleRead, SnapshotScheduleWrite
from chroma_orch.domain.states import DesiredState
from chroma_orch.errors import NotFoundError


def to_read(schedule: SnapshotSchedule, instance: Instance | None = None) -> SnapshotScheduleRead:
    return SnapshotScheduleRead(
        tenant_id=schedule.tenant_id,
        instance_id=schedule.instance_id,
        every=schedule.every_seconds,
        keep=schedule.keep,
        next_snapshot_at=instance.next_snapshot_at if instance is not None else None,
        created_at=schedule.created_at,
        updated_at=schedule.updated_at,
    )


class ScheduleService:
    def __init__(
        self, session: AsyncSession, principal: Principal, instances: InstanceService
    ) -> None:
        self.session = session
        self.principal = principal
        self.instances = instances

    async def set_for_instance(
        self, instance_id: uuid.UUID, data: SnapshotScheduleWrite
    ) -> SnapshotScheduleRead:
        instance = await self._live(instance_id)
        saved = await schedules.save(
            self.session, instance.tenant_id, instance.id, data.every, data.keep
        )
        await schedules.reschedule(self.session, instance.tenant_id, instance.id, data.every)
        return to_read(saved, await self._refreshed(instance))

    async def for_instance(self, instance_id: uuid.UUID) -> SnapshotScheduleRead:
        """The schedule that applies to the instance: its own, else its tenant's."""
        instance = await self._live(instance_id)
        found = await schedules.find(self.session, instance.tenant_id, instance.id)
        found = found or await schedules.find(self.session, instance.tenant_id, None)
        if found is None:
            raise NotFoundError(f"no snapshot schedule applies to instance {instance_id}")
        return to_read(found, instance)

    async def clear_for_instance(self, instance_id: uuid.UUID) -> None:
        """Remove the instance's own schedule; its tenant's applies again, if any."""
        instance = await self._live(instance_id)
        await schedules.remove(self.session, instance.tenant_id, instance.id)
        fallback = await schedules.find(self.session, instance.tenant_id, None)
        every = fallback.every_seconds if fallback is not None else None
        await schedules.reschedule(self.session, instance.tenant_id, instance.id, every)

    async def set_for_tenant(
        self, tenant_id: uuid.UUID, data: SnapshotScheduleWrite
    ) -> SnapshotScheduleRead:
        await self._tenant(tenant_id)
        saved = await schedules.save(self.session, tenant_id, None, data.every, data.keep)
        await schedules.reschedule(self.session, tenant_id, None, data.every)
        return to_read(saved)

    async def for_tenant(self, tenant_id: uuid.UUID) -> SnapshotScheduleRead:
        await self._tenant(tenant_id)
        found = await schedules.find(self.session, tenant_id, None)
        if found is None:
            raise NotFoundError(f"tenant {tenant_id} has no snapshot schedule")
        return to_read(found)

    async def clear_for_tenant(self, tenant_id: uuid.UUID) -> None:
        await self._tenant(tenant_id)
        await schedules.remove(self.session, tenant_id, None)
        await schedules.reschedule(self.session, tenant_id, None, None)

    async def _live(self, instance_id: uuid.UUID) -> Instance:
        instance = await self.instances.get(instance_id, for_update=True)
        if instance.desired_state == DesiredState.DELETED:
            raise NotFoundError(f"instance {instance_id} not found")
        return instance

    async def _tenant(self, tenant_id: uuid.UUID) -> None:
        found = await self.session.get(Tenant, tenant_id)
        if found is None or not self.principal.can_see(tenant_id):
            raise NotFoundError(f"tenant {tenant_id} not found")

    async def _refreshed(self, instance: Instance) -> Instance:
        fresh = await self.instances.get(instance.id)
        return fresh
