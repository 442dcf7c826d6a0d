"""/v1 snapshot schedules: thin handlers over ``ScheduleService``."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Response, status

from chroma_orch.api.deps import Schedules
from chroma_orch.api.problems import problem_responses
from chroma_orch.domain.schemas import SnapshotScheduleRead, SnapshotScheduleWrite
from chroma_orch.errors import (
    BadRequestError,
    ForbiddenError,
    NotFoundError,
    UnauthorizedError,
    ValidationFailedError,
)

router = APIRouter(
    prefix="/v1",
    tags=["snapshots"],
    responses=problem_responses(
        BadRequestError, UnauthorizedError, ForbiddenError, ValidationFailedError, NotFoundError
    ),
)
_INSTANCE = "/instances/{instance_id}/snapshot-schedule"
_TENANT = "/tenants/{tenant_id}/snapshot-schedule"
_ABOUT = (
    "A scheduled snapshot every `every` seconds, keeping the newest `keep` ready ones "
    "(older scheduled snapshots are deleted). An instance's own schedule overrides its "
    "tenant's. A newly covered instance takes its first scheduled snapshot at the "
    "scheduler's next pass; after downtime, missed runs are caught up once."
)


@router.put(
    _INSTANCE,
    operation_id="setInstanceSnapshotSchedule",
    summary="Set an instance's own snapshot schedule",
    description=_ABOUT,
)
async def set_instance_schedule(
    instance_id: uuid.UUID, body: SnapshotScheduleWrite, schedules: Schedules
) -> SnapshotScheduleRead:
    return await schedules.set_for_instance(instance_id, body)


@router.get(
    _INSTANCE,
    operation_id="getInstanceSnapshotSchedule",
    summary="The snapshot schedule that applies to an instance (its own, else its tenant's)",
)
async def get_instance_schedule(
    instance_id: uuid.UUID, schedules: Schedules
) -> SnapshotScheduleRead:
    return await schedules.for_instance(instance_id)


@router.delete(
    _INSTANCE,
    status_code=status.HTTP_204_NO_CONTENT,
    operation_id="clearInstanceSnapshotSchedule",
    summary="Remove an instance's own snapshot schedule (its tenant's applies again)",
)
async def clear_instance_schedule(instance_id: uuid.UUID, schedules: Schedules) -> Response:
    await schedules.clear_for_instance(instance_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.put(
    _TENANT,
    operation_id="setTenantSnapshotSchedule",
    summary="Set a tenant's snapshot schedule (for its instances without their own)",
    description=_ABOUT,
)
async def set_tenant_schedule(
    tenant_id: uuid.UUID, body: SnapshotScheduleWrite, schedules: Schedules
) -> SnapshotScheduleRead:
    return await schedules.set_for_tenant(tenant_id, body)


@router.get(
    _TENANT,
    operation_id="getTenantSnapshotSchedule",
    summary="A tenant's snapshot schedule",
)
async def get_tenant_schedule(tenant_id: uuid.UUID, schedules: Schedules) -> SnapshotScheduleRead:
    return await schedules.for_tenant(tenant_id)


@router.delete(
    _TENANT,
    status_code=status.HTTP_204_NO_CONTENT,
    operation_id="clearTenantSnapshotSchedule",
    summary="Remove a tenant's snapshot schedule",
)
async def clear_tenant_schedule(tenant_id: uuid.UUID, schedules: Schedules) -> Response:
    await schedules.clear_for_tenant(tenant_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
