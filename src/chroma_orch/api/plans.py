"""/v1/plans: admin-only management of plans (docs/specs.md)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, status

from chroma_orch.api.deps import Plans
from chroma_orch.api.problems import problem_responses
from chroma_orch.domain.plans import PlanDefinition, PlanName, PlanRead
from chroma_orch.errors import (
    BadRequestError,
    ForbiddenError,
    NotFoundError,
    PlanInUseError,
    UnauthorizedError,
    ValidationFailedError,
)

router = APIRouter(
    prefix="/v1/plans",
    tags=["plans"],
    responses=problem_responses(
        BadRequestError, UnauthorizedError, ForbiddenError, ValidationFailedError
    ),
)
Name = Annotated[PlanName, Path(description="The plan's name.")]


@router.put(
    "/{name}",
    operation_id="putPlan",
    summary="Create or replace a plan (admin)",
    description="A plan's defaults, allowed ranges and quota apply to its tenants' next "
    "launches and spec changes; instances keep the spec they have.",
)
async def put_plan(name: Name, body: PlanDefinition, plans: Plans) -> PlanRead:
    return await plans.put(name, body)


@router.get("", operation_id="listPlans", summary="List plans (admin)")
async def list_plans(plans: Plans) -> list[PlanRead]:
    return await plans.all()


@router.get(
    "/{name}",
    operation_id="getPlan",
    summary="Get a plan (admin)",
    responses=problem_responses(NotFoundError),
)
async def get_plan(name: Name, plans: Plans) -> PlanRead:
    return await plans.get(name)


@router.delete(
    "/{name}",
    status_code=status.HTTP_204_NO_CONTENT,
    operation_id="deletePlan",
    summary="Delete a plan no tenant has (admin)",
    responses=problem_responses(NotFoundError, PlanInUseError),
)
async def delete_plan(name: Name, plans: Plans) -> None:
    await plans.delete(name)
