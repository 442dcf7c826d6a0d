"""/v1/instances: thin handlers over ``InstanceService``."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Header, Query, status

from chroma_orch.api.deps import Context, Instances
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
    InvalidTransitionError,
    NotFoundError,
    QuotaExceededError,
    UnauthorizedError,
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
        NotFoundError, ConflictError, IdempotencyKeyReusedError, QuotaExceededError
    ),
)
async def create_instance(
    body: InstanceCreate,
    instances: Instances,
    ctx: Context,
    idempotency_key: Annotated[
        str | None,
        Header(
            max_length=255,
            description="Retry-safe key: the same key and body give the same answer.",
        ),
    ] = None,
) -> InstanceAccepted:
    return _accepted(ctx.policy, await instances.create(body, idempotency_key))


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
) -> InstancePage:
    return await instances.list(phase=phase, tenant_id=tenant_id, limit=limit, cursor=cursor)


@router.get("/{instance_id}", operation_id="getInstance", summary="Get an instance", responses=_ONE)
async def get_instance(instance_id: uuid.UUID, instances: Instances, ctx: Context) -> InstanceRead:
    return to_read(await instances.get(instance_id), ctx.policy)


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
    summary="Change an instance's idle timeout or wake-on-request",
    responses=_ONE,
)
async def update_instance(
    instance_id: uuid.UUID, body: InstanceUpdate, instances: Instances, ctx: Context
) -> InstanceRead:
    return to_read(await instances.update(instance_id, body), ctx.policy)


def _action_route(action: Action, summary: str) -> None:
    async def handler(
        instance_id: uuid.UUID, instances: Instances, ctx: Context
    ) -> InstanceAccepted:
        return _accepted(ctx.policy, await instances.act(instance_id, action))

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
    responses=_ACTION,
)
async def delete_instance(
    instance_id: uuid.UUID,
    instances: Instances,
    ctx: Context,
    keep_data: Annotated[bool, Query(description="Keep the data directory.")] = False,
) -> InstanceAccepted:
    pair = await instances.act(instance_id, Action.DELETE, keep_data=keep_data)
    return _accepted(ctx.policy, pair)


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
