"""The original seed API, kept working: /launch, /stop, /delete, /status by user id."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Response, status

from chroma_orch.api.deps import Context, Instances, Tenants
from chroma_orch.api.problems import problem_responses
from chroma_orch.domain.instances import to_read
from chroma_orch.domain.schemas import LaunchRequest, SeedInstance, TenantName, seed_view
from chroma_orch.domain.seed import SeedService
from chroma_orch.domain.states import Action
from chroma_orch.errors import (
    BadRequestError,
    ForbiddenError,
    InvalidSpecError,
    InvalidTransitionError,
    NotFoundError,
    QuotaExceededError,
    UnauthorizedError,
    ValidationFailedError,
)

router = APIRouter(
    tags=["seed"],
    responses=problem_responses(
        BadRequestError, UnauthorizedError, ForbiddenError, NotFoundError, ValidationFailedError
    ),
)
UserId = Annotated[TenantName, Path(description="The user (tenant name).")]


async def get_seed(tenants: Tenants, instances: Instances) -> SeedService:
    return SeedService(tenants, instances)


Seed = Annotated[SeedService, Depends(get_seed)]


@router.post(
    "/launch",
    operation_id="seedLaunch",
    summary="Launch (or return) the user's instance",
    response_model=SeedInstance,
    responses={
        202: {"model": SeedInstance, "description": "Launch accepted"},
        **problem_responses(QuotaExceededError, InvalidTransitionError, InvalidSpecError),
    },
)
async def launch(body: LaunchRequest, seed: Seed, ctx: Context, response: Response) -> Any:
    instance, intent = await seed.launch(body.user_id)
    if intent is not None:
        response.status_code = status.HTTP_202_ACCEPTED
    return seed_view(to_read(instance, ctx.policy), body.user_id)


@router.post(
    "/stop/{user_id}",
    status_code=status.HTTP_202_ACCEPTED,
    operation_id="seedStop",
    summary="Stop the user's instance",
    response_model=SeedInstance,
    responses=problem_responses(InvalidTransitionError),
)
async def stop(user_id: UserId, seed: Seed, ctx: Context) -> Any:
    return seed_view(to_read(await seed.act(user_id, Action.STOP), ctx.policy), user_id)


@router.delete(
    "/delete/{user_id}",
    status_code=status.HTTP_202_ACCEPTED,
    operation_id="seedDelete",
    summary="Delete the user's instance and its data",
    response_model=SeedInstance,
    responses=problem_responses(InvalidTransitionError),
)
async def delete(user_id: UserId, seed: Seed, ctx: Context) -> Any:
    return seed_view(to_read(await seed.act(user_id, Action.DELETE), ctx.policy), user_id)


@router.get(
    "/status/{user_id}",
    operation_id="seedStatus",
    summary="Status, endpoint and port of the user's instance",
    response_model=SeedInstance,
)
async def status_(user_id: UserId, seed: Seed, ctx: Context) -> Any:
    return seed_view(to_read(await seed.instance(user_id), ctx.policy), user_id)
