"""/v1 snapshots: thin handlers over ``SnapshotService``."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, status

from chroma_orch.api.deps import Context, Snapshots
from chroma_orch.api.problems import problem_responses
from chroma_orch.domain.instances import to_read as instance_read
from chroma_orch.domain.schemas import (
    InstanceAccepted,
    IntentRead,
    RestoreRequest,
    SnapshotPage,
    SnapshotRead,
)
from chroma_orch.domain.snapshots import to_read
from chroma_orch.errors import (
    BadRequestError,
    ConflictError,
    ForbiddenError,
    InvalidTransitionError,
    NotFoundError,
    QuotaExceededError,
    UnauthorizedError,
    ValidationFailedError,
)

router = APIRouter(
    prefix="/v1",
    tags=["snapshots"],
    responses=problem_responses(
        BadRequestError, UnauthorizedError, ForbiddenError, ValidationFailedError
    ),
)


@router.post(
    "/instances/{instance_id}/snapshots",
    status_code=status.HTTP_202_ACCEPTED,
    operation_id="createSnapshot",
    summary="Snapshot an instance's data",
    description="Answers at once with the pending snapshot; the reconciler takes it (a "
    "running server pauses for the copy, a stopped instance is not started). Follow its "
    "phase with GET /v1/snapshots/{snapshot_id} or the event stream.",
    responses=problem_responses(NotFoundError, QuotaExceededError),
)
async def create_snapshot(instance_id: uuid.UUID, snapshots: Snapshots) -> SnapshotRead:
    return to_read(await snapshots.request(instance_id))


@router.get(
    "/instances/{instance_id}/snapshots",
    operation_id="listInstanceSnapshots",
    summary="List an instance's snapshots, newest first",
    responses=problem_responses(NotFoundError),
)
async def list_snapshots(instance_id: uuid.UUID, snapshots: Snapshots) -> SnapshotPage:
    return SnapshotPage(items=[to_read(s) for s in await snapshots.list_for(instance_id)])


@router.get(
    "/snapshots/{snapshot_id}",
    operation_id="getSnapshot",
    summary="Get a snapshot",
    responses=problem_responses(NotFoundError),
)
async def get_snapshot(snapshot_id: uuid.UUID, snapshots: Snapshots) -> SnapshotRead:
    return to_read(await snapshots.get(snapshot_id))


@router.delete(
    "/snapshots/{snapshot_id}",
    status_code=status.HTTP_202_ACCEPTED,
    operation_id="deleteSnapshot",
    summary="Delete a snapshot (its archive, then the record)",
    responses=problem_responses(NotFoundError, ConflictError),
)
async def delete_snapshot(snapshot_id: uuid.UUID, snapshots: Snapshots) -> SnapshotRead:
    return to_read(await snapshots.delete(snapshot_id))


@router.post(
    "/instances/{instance_id}/restore",
    status_code=status.HTTP_202_ACCEPTED,
    operation_id="restoreInstance",
    summary="Restore an instance's data from a snapshot",
    description="Stops the instance, keeps its current data as a pre_restore snapshot, "
    "replaces the data with the snapshot's and starts it again (a new generation).",
    responses=problem_responses(NotFoundError, ConflictError, InvalidTransitionError),
)
async def restore_instance(
    instance_id: uuid.UUID, body: RestoreRequest, snapshots: Snapshots, ctx: Context
) -> InstanceAccepted:
    instance, intent = await snapshots.restore(instance_id, body.snapshot_id)
    return InstanceAccepted(
        instance=instance_read(instance, ctx.policy), intent=IntentRead.model_validate(intent)
    )
