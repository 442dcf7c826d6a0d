"""/v1 guarded upgrades of one instance: thin handlers over ``UpgradeService``."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, status

from chroma_orch.api.deps import Upgrades
from chroma_orch.api.problems import problem_responses
from chroma_orch.domain.upgrade_schemas import (
    InstanceUpgradePage,
    InstanceUpgradeRead,
    UpgradeRequest,
)
from chroma_orch.errors import (
    BadRequestError,
    ConflictError,
    ForbiddenError,
    InvalidSpecError,
    InvalidTransitionError,
    NotFoundError,
    SnapshotsUnsupportedError,
    UnauthorizedError,
    UpgradeInProgressError,
    ValidationFailedError,
)

router = APIRouter(
    prefix="/v1",
    tags=["upgrades"],
    responses=problem_responses(
        BadRequestError, UnauthorizedError, ForbiddenError, ValidationFailedError, NotFoundError
    ),
)


@router.post(
    "/instances/{instance_id}/upgrade",
    status_code=status.HTTP_202_ACCEPTED,
    operation_id="upgradeInstance",
    summary="Upgrade an instance's Chroma version, guarded",
    description="Answers at once with the pending upgrade. The reconciler records a parity "
    "probe from the running server (its collections, their counts, a sample query each), "
    "takes a pre_upgrade snapshot, restarts the server on the new version and probes it "
    "again. When the new server does not start, does not answer in time or answers "
    "differently, it rolls back the version and the data, and the instance shows "
    "failure.reason UpgradeRolledBack. Follow it with GET "
    "/v1/instances/{instance_id}/upgrades/{upgrade_id} or the event stream. The instance "
    "must be running; stop, restart and restore wait until the upgrade has ended (409 "
    "upgrade_in_progress); a delete cancels it.",
    responses=problem_responses(
        ConflictError,
        InvalidTransitionError,
        UpgradeInProgressError,
        InvalidSpecError,
        SnapshotsUnsupportedError,
    ),
)
async def upgrade_instance(
    instance_id: uuid.UUID, body: UpgradeRequest, upgrades: Upgrades
) -> InstanceUpgradeRead:
    return InstanceUpgradeRead.of(await upgrades.request(instance_id, body.chroma_version))


@router.get(
    "/instances/{instance_id}/upgrades",
    operation_id="listInstanceUpgrades",
    summary="List an instance's upgrades, newest first",
)
async def list_upgrades(instance_id: uuid.UUID, upgrades: Upgrades) -> InstanceUpgradePage:
    found = await upgrades.list_for(instance_id)
    return InstanceUpgradePage(items=[InstanceUpgradeRead.of(u) for u in found])


@router.get(
    "/instances/{instance_id}/upgrades/{upgrade_id}",
    operation_id="getInstanceUpgrade",
    summary="Get one upgrade of an instance",
)
async def get_upgrade(
    instance_id: uuid.UUID, upgrade_id: uuid.UUID, upgrades: Upgrades
) -> InstanceUpgradeRead:
    return InstanceUpgradeRead.of(await upgrades.get(instance_id, upgrade_id))
