"""/v1 snapshots: thin handlers over ``SnapshotService``."""

from __future__ import annotations

import base64
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, status
from fastapi.responses import StreamingResponse

from chroma_orch.api.deps import Context, Snapshots
from chroma_orch.api.problems import problem_responses
from chroma_orch.domain.instances import to_read as instance_read
from chroma_orch.domain.schemas import (
    InstanceAccepted,
    InstanceImport,
    IntentRead,
    RestoreRequest,
    SnapshotPage,
    SnapshotRead,
)
from chroma_orch.domain.snapshot_transfer import ArchiveImports, open_export
from chroma_orch.domain.snapshots import to_read
from chroma_orch.errors import (
    BadRequestError,
    ConflictError,
    ForbiddenError,
    IdempotencyKeyReusedError,
    IncompatibleArchiveVersionError,
    InvalidArchiveError,
    InvalidTransitionError,
    NotFoundError,
    PayloadTooLargeError,
    QuotaExceededError,
    ServiceUnavailableError,
    SnapshotsUnsupportedError,
    UnauthorizedError,
    UnsupportedMediaTypeError,
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
    "phase with GET /v1/snapshots/{snapshot_id} or the event stream. 409 "
    "`snapshots_unsupported` where the runtime cannot copy its instances' data (ECS with "
    "EFS or ephemeral storage).",
    responses=problem_responses(NotFoundError, QuotaExceededError, SnapshotsUnsupportedError),
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


DOWNLOAD_TYPE = "application/octet-stream"
"""The archive's media type in the OpenAPI document (and an export's): generated clients
(openapi-python-client) read it as a file, and ``application/zstd`` as nothing."""
_BINARY: dict[str, Any] = {"schema": {"type": "string", "format": "binary"}}
_EXPORT_HEADERS = {
    "Content-Length": {
        "description": "The archive's size in bytes.",
        "schema": {"type": "integer"},
    },
    "Repr-Digest": {
        "description": "RFC 9530: `sha-256=:<base64>:` of the archive.",
        "schema": {"type": "string"},
    },
    "X-Checksum-SHA256": {
        "description": "The archive's SHA-256 (hex), as the snapshot's `checksum`.",
        "schema": {"type": "string"},
    },
}


@router.get(
    "/snapshots/{snapshot_id}/archive",
    operation_id="exportSnapshot",
    summary="Download a ready snapshot's archive",
    description="Streams the archive (a zstd-compressed tar whose first member is the "
    "manifest `chroma-orch-snapshot.json`) from the snapshot store. Check it against "
    "`X-Checksum-SHA256` (or `Repr-Digest`); POST /v1/instances/import takes it back.",
    response_class=StreamingResponse,
    responses={
        200: {"content": {DOWNLOAD_TYPE: _BINARY}, "headers": _EXPORT_HEADERS},
        **problem_responses(NotFoundError, ConflictError, ServiceUnavailableError),
    },
)
async def export_snapshot(
    snapshot_id: uuid.UUID, snapshots: Snapshots, ctx: Context
) -> StreamingResponse:
    download = await open_export(snapshots, ctx.store, snapshot_id)
    snapshot = download.snapshot
    headers = {"Content-Disposition": f'attachment; filename="{download.filename}"'}
    if snapshot.size_bytes is not None:
        headers["Content-Length"] = str(snapshot.size_bytes)
    if snapshot.checksum:
        digest = base64.b64encode(bytes.fromhex(snapshot.checksum)).decode()
        headers |= {"Repr-Digest": f"sha-256=:{digest}:", "X-Checksum-SHA256": snapshot.checksum}
    return StreamingResponse(download.chunks, media_type=DOWNLOAD_TYPE, headers=headers)


@router.post(
    "/instances/import",
    tags=["instances"],
    status_code=status.HTTP_202_ACCEPTED,
    operation_id="importInstance",
    summary="Launch a new instance from an uploaded archive",
    description="The body is a snapshot archive (as GET /v1/snapshots/{snapshot_id}/archive "
    "gives, or `chroma-orch instances import` packs from a Chroma persist directory), "
    "streamed into the snapshot store and verified before anything is created: not an "
    "archive, an unsafe one (links, absolute or `..` names) or a damaged one is 422 "
    "`invalid_archive`, data of another Chroma major version 422 "
    "`incompatible_chroma_version`, more than the service's limit 413. The instance "
    "starts from a ready snapshot of kind `import` holding the archive.",
    openapi_extra={
        "requestBody": {
            "required": True,
            "description": "The archive (zstd-compressed tar), sent as "
            "application/octet-stream (application/zstd and application/x-zstd are "
            "accepted too).",
            "content": {DOWNLOAD_TYPE: _BINARY},
        }
    },
    responses=problem_responses(
        NotFoundError,
        ConflictError,
        IdempotencyKeyReusedError,
        QuotaExceededError,
        PayloadTooLargeError,
        UnsupportedMediaTypeError,
        InvalidArchiveError,
        IncompatibleArchiveVersionError,
        ServiceUnavailableError,
    ),
)
async def import_instance(
    request: Request,
    params: Annotated[InstanceImport, Query()],
    snapshots: Snapshots,
    ctx: Context,
    idempotency_key: Annotated[
        str | None,
        Header(
            max_length=255,
            description="Retry-safe key: the same key and archive give the same answer.",
        ),
    ] = None,
) -> InstanceAccepted:
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    length = request.headers.get("content-length")
    declared = int(length) if length and length.isdigit() else None
    imports = ArchiveImports(snapshots, ctx.store)
    instance, intent = await imports.create(
        params.to_create(), media, request.stream(), declared, idempotency_key
    )
    return InstanceAccepted(
        instance=instance_read(instance, ctx.policy), intent=IntentRead.model_validate(intent)
    )
