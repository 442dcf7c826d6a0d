"""/v1/instances: thin handlers over ``InstanceService``."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Header, Query, status
from starlette.exceptions import HTTPException as StarletteHTTPException

from chroma_orch.api.deps import Context, Deletions, Instances
from chroma_orch.api.problems import problem_responses
from chroma_orch.db.models import Instance, Intent
from chroma_orch.domain.instances import InstancePolicy, to_read
from chroma_orch.domain.logs import read_logs
from chroma_orch.domain.schemas import (
    InstanceAccepted,
    InstanceCreate,
    InstanceLogs,
    InstancePage,
    InstanceRead,
    InstanceUpdate,
    IntentRead,
)
from chroma_orch.domain.states import Action, Phase
from chroma_orch.errors import (
    BadRequestError,
    ConflictError,
    ForbiddenError,
    IdempotencyKeyReusedError,
    InvalidSpecError,
    InvalidTransitionError,
    NotFoundError,
    QuotaExceededError,
    UnauthorizedError,
    UpgradeInProgressError,
    ValidationFailedError,
)

router = APIRouter(
    prefix="/v1/instances",
    tags=["instances"],
    responses=problem_responses(
        BadRequestError, UnauthorizedError, ForbiddenError, ValidationFailedError
    ),
)
_ONE = problem_responses(NotFoundError)
_ACTION = problem_responses(NotFoundError, InvalidTransitionError)


@router.api_route(
    "/import",
    methods=["GET", "HEAD", "PUT", "PATCH", "DELETE", "OPTIONS"],
    include_in_schema=False,
)
async def import_other_methods() -> None:
    """405 for ``/v1/instances/import`` (POST only, ``api/snapshots.py``), declared before
    ``/{instance_id}`` so that "import" is not read as an instance id (a 422)."""
    raise StarletteHTTPException(status.HTTP_405_METHOD_NOT_ALLOWED)


def _accepted(policy: InstancePolicy, pair: tuple[Instance, Intent]) -> InstanceAccepted:
    instance, intent = pair
    return InstanceAccepted(
        instance=to_read(instance, policy), intent=IntentRead.model_validate(intent)
    )


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    operation_id="createInstance",
    summary="Launch a new instance",
    responses=problem_responses(
        NotFoundError,
        ConflictError,
        IdempotencyKeyReusedError,
        QuotaExceededError,
        InvalidSpecError,
    ),
)
async def create_instance(
    body: InstanceCreate,
    instances: Instances,
    idempotency_key: Annotated[
        str | None,
        Header(
            max_length=255,
            description="Retry-safe key: the same key and body give the same answer.",
        ),
    ] = None,
) -> InstanceAccepted:
    return _accepted(instances.policy, await instances.create(body, idempotency_key))


@router.get(
    "",
    operation_id="listInstances",
    summary="List instances",
    responses=problem_responses(BadRequestError),
)
async def list_instances(
    instances: Instances,
    phase: Phase | None = None,
    tenant_id: Annotated[uuid.UUID | None, Query(description="Admin only: one tenant.")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    search: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=63,
            description="Prefix of the instance's name or of its tenant's name "
            "(case-sensitive, no wildcards; no control or format characters).",
        ),
    ] = None,
    deleted: Annotated[
        bool,
        Query(
            description="List the deleted instances instead (those that can still be "
            "undeleted, until the retention of deleted instances has passed)."
        ),
    ] = False,
) -> InstancePage:
    return await instances.list(
        phase=phase,
        tenant_id=tenant_id,
        limit=limit,
        cursor=cursor,
        deleted=deleted,
        search=search,
    )


@router.get("/{instance_id}", operation_id="getInstance", summary="Get an instance", responses=_ONE)
async def get_instance(instance_id: uuid.UUID, instances: Instances) -> InstanceRead:
    return to_read(await instances.get(instance_id), instances.policy)


@router.get(
    "/{instance_id}/wait",
    operation_id="waitInstance",
    summary="Wait until the instance reaches a phase (long poll)",
    description="Answers as soon as the instance is in `phase` for its current generation, "
    "when it failed, or when `timeout` seconds passed, with the instance as it is then.",
    responses=_ONE,
)
async def wait_instance(
    instance_id: uuid.UUID,
    instances: Instances,
    ctx: Context,
    phase: Phase = Phase.RUNNING,
    timeout: Annotated[float, Query(ge=0, le=60)] = 30.0,
) -> InstanceRead:
    instance = await instances.wait(instance_id, phase, timeout, ctx.hub)
    return to_read(instance, ctx.policy)


@router.patch(
    "/{instance_id}",
    operation_id="updateInstance",
    summary="Change an instance's idle timeout, wake-on-request, labels or spec",
    description="`spec` is merged onto the current spec; when the resolved spec changes, "
    "the instance gets a new generation (intent `reconfigure`): a running instance restarts "
    "on it with its data, a stopped one gets it at its next start, and `observed_generation` "
    "tells when it took effect. A spec that changes nothing changes nothing. 422 "
    "`invalid_spec` names every reason a spec is refused; 429 `quota_exceeded` when the "
    "tenant's plan has no room; 409 `upgrade_in_progress` during a guarded upgrade.",
    responses=problem_responses(
        NotFoundError,
        InvalidTransitionError,
        UpgradeInProgressError,
        InvalidSpecError,
        QuotaExceededError,
    ),
)
async def update_instance(
    instance_id: uuid.UUID, body: InstanceUpdate, instances: Instances
) -> InstanceRead:
    return to_read(await instances.update(instance_id, body), instances.policy)


def _action_route(action: Action, summary: str) -> None:
    async def handler(instance_id: uuid.UUID, instances: Instances) -> InstanceAccepted:
        return _accepted(instances.policy, await instances.act(instance_id, action))

    router.add_api_route(
        f"/{{instance_id}}/{action.value}",
        handler,
        methods=["POST"],
        status_code=status.HTTP_202_ACCEPTED,
        operation_id=f"{action.value}Instance",
        summary=summary,
        responses=_ACTION,
    )


_action_route(Action.START, "Start a stopped or failed instance")
_action_route(Action.STOP, "Stop an instance (its data is kept)")
_action_route(Action.RESTART, "Restart a running instance")


@router.delete(
    "/{instance_id}",
    status_code=status.HTTP_202_ACCEPTED,
    operation_id="deleteInstance",
    summary="Delete an instance: stop it, free its port, remove its data",
    description="Unless `purge=true`, the instance's data is first kept as a pre_delete "
    "snapshot, and the deleted instance can be undeleted (POST /v1/instances/{id}/undelete) "
    "until the retention of deleted instances has passed; then it and its snapshots are "
    "purged (and data kept in place because its pre_delete snapshot failed; data kept "
    "with `keep_data=true` stays on the runtime's storage). `purge=true` (needs "
    "`keep_data=false`) takes no snapshot and deletes every snapshot of the instance at "
    "once: nothing of its data is left. A repeated delete answers like the first one "
    "(with `purge=true`, it purges a deleted instance: its snapshots, and the data its "
    "delete kept in place).",
    responses=problem_responses(NotFoundError, InvalidTransitionError, ValidationFailedError),
)
async def delete_instance(
    instance_id: uuid.UUID,
    deletions: Deletions,
    keep_data: Annotated[bool, Query(description="Keep the data directory.")] = False,
    purge: Annotated[
        bool,
        Query(
            description="Take no pre_delete snapshot and delete the instance's snapshots too: "
            "it cannot be undeleted. Not with keep_data=true (422)."
        ),
    ] = False,
) -> InstanceAccepted:
    pair = await deletions.delete(instance_id, keep_data=keep_data, purge=purge)
    return _accepted(deletions.instances.policy, pair)


@router.post(
    "/{instance_id}/undelete",
    status_code=status.HTTP_202_ACCEPTED,
    operation_id="undeleteInstance",
    summary="Bring a deleted instance back with its data",
    description="Its data comes from its newest ready pre_delete snapshot (or is the data "
    "its delete kept in place: keep_data=true, or its pre_delete snapshot failed), and it "
    "starts again (a new generation). 409 while the delete is still under way, when it "
    "has no ready pre_delete snapshot and no data kept (deleted with purge=true, or on a "
    "runtime that cannot snapshot), or when a live instance of the tenant has its name; "
    "404 once it was purged.",
    responses=problem_responses(
        NotFoundError, ConflictError, InvalidTransitionError, QuotaExceededError
    ),
)
async def undelete_instance(instance_id: uuid.UUID, deletions: Deletions) -> InstanceAccepted:
    return _accepted(deletions.instances.policy, await deletions.undelete(instance_id))


@router.get(
    "/{instance_id}/logs",
    operation_id="getInstanceLogs",
    summary="Tail of the instance's server output",
    responses=_ONE,
)
async def get_instance_logs(
    instance_id: uuid.UUID,
    instances: Instances,
    ctx: Context,
    tail: Annotated[int, Query(ge=1, le=10000)] = 100,
) -> InstanceLogs:
    return await read_logs(instances, ctx.runtime, instance_id, tail)
