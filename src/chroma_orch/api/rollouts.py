"""/v1/upgrades, /v1/restarts and /v1/rollouts: fleet operations in waves (admin only)."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query, status

from chroma_orch.api.deps import Unit
from chroma_orch.api.problems import problem_responses
from chroma_orch.domain.rollout_schemas import (
    RestartRolloutCreate,
    RolloutKind,
    RolloutMemberRead,
    RolloutRead,
    RolloutState,
    UpgradeRolloutCreate,
)
from chroma_orch.domain.rollouts import RolloutService
from chroma_orch.errors import (
    BadRequestError,
    ForbiddenError,
    InvalidTransitionError,
    NotFoundError,
    UnauthorizedError,
    ValidationFailedError,
)
from chroma_orch.runtimes.base import spec_support


async def get_rollouts(unit: Unit) -> RolloutService:
    support = spec_support(unit.ctx.runtime)
    versions = support.chroma_versions() if support is not None else None
    return RolloutService(unit.session, unit.principal, versions)


Rollouts = Annotated[RolloutService, Depends(get_rollouts)]

router = APIRouter(
    prefix="/v1",
    tags=["rollouts"],
    responses=problem_responses(
        BadRequestError, UnauthorizedError, ForbiddenError, ValidationFailedError
    ),
)
_ONE = problem_responses(NotFoundError)
_WAVES = (
    "Members are the live instances the selector matches when the rollout is created, "
    "spread over the waves in a fixed order. The rollout loop works through one wave at "
    "a time, `max_concurrent` members at once (and under the service's cap on concurrent "
    "starts), waits `pause_seconds` after each wave, and halts by itself when more than "
    "`error_budget` members of a wave failed or rolled back. Progress: `rollout.*` events "
    "on the admins' event stream."
)


@router.post(
    "/upgrades",
    status_code=status.HTTP_202_ACCEPTED,
    operation_id="createUpgradeRollout",
    summary="Upgrade a selection of instances to a Chroma version, in waves (admin)",
    description=_WAVES + " Each member gets a guarded upgrade (rolled back on failure); "
    "one already on the version succeeds at once.",
)
async def create_upgrade(body: UpgradeRolloutCreate, rollouts: Rollouts) -> RolloutRead:
    return await rollouts.read(await rollouts.create(RolloutKind.UPGRADE, body))


@router.post(
    "/restarts",
    status_code=status.HTTP_202_ACCEPTED,
    operation_id="createRestartRollout",
    summary="Restart a selection of instances, in waves (admin)",
    description=_WAVES + " A stopped member is skipped; a restart keeps the data.",
)
async def create_restart(body: RestartRolloutCreate, rollouts: Rollouts) -> RolloutRead:
    return await rollouts.read(await rollouts.create(RolloutKind.RESTART, body))


@router.get("/rollouts", operation_id="listRollouts", summary="List rollouts, newest first")
async def list_rollouts(
    rollouts: Rollouts,
    state: RolloutState | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> list[RolloutRead]:
    return await rollouts.read_many(await rollouts.recent(state, limit))


@router.get(
    "/rollouts/{rollout_id}",
    operation_id="getRollout",
    summary="A rollout with its per-wave counts",
    responses=_ONE,
)
async def get_rollout(rollout_id: uuid.UUID, rollouts: Rollouts) -> RolloutRead:
    return await rollouts.read(await rollouts.get(rollout_id))


@router.get(
    "/rollouts/{rollout_id}/members",
    operation_id="listRolloutMembers",
    summary="A rollout's members: wave, state and what happened",
    responses=_ONE,
)
async def list_members(rollout_id: uuid.UUID, rollouts: Rollouts) -> list[RolloutMemberRead]:
    return await rollouts.members(rollout_id)


def _transition(action: str, summary: str) -> None:
    @router.post(
        f"/rollouts/{{rollout_id}}/{action}",
        operation_id=f"{action}Rollout",
        summary=summary,
        responses=problem_responses(NotFoundError, InvalidTransitionError),
    )
    async def transition(rollout_id: uuid.UUID, rollouts: Rollouts) -> RolloutRead:
        return await rollouts.read(await rollouts.transition(rollout_id, action))


_transition("pause", "Pause a rollout: no member starts until it is resumed (admin)")
_transition("resume", "Resume a paused rollout (admin)")
_transition(
    "cancel",
    "Cancel a rollout: members not started yet are skipped; those under way finish (admin)",
)
