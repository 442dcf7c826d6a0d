"""GET /v1/fleet: the fleet at a glance, for the dashboard's fleet view (admin)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from chroma_orch.api.deps import Unit
from chroma_orch.api.problems import problem_responses
from chroma_orch.domain.fleet import FleetRead, fleet_view
from chroma_orch.errors import ForbiddenError, UnauthorizedError, ValidationFailedError

router = APIRouter(tags=["operations"])


@router.get(
    "/v1/fleet",
    operation_id="getFleet",
    summary="The fleet at a glance (admin)",
    description="Instances (not deleted) counted by phase and by runtime; a histogram of "
    "the latest starts' seconds from request (or automatic restart) to running, from the "
    "event log's `instance.phase_changed` events in the window; and the latest failures "
    "(`instance.failed`, `instance.crashed`) in the window with their reason and message.",
    responses=problem_responses(UnauthorizedError, ForbiddenError, ValidationFailedError),
)
async def get_fleet(
    unit: Unit,
    failures: Annotated[
        int, Query(ge=0, le=100, description="How many recent failures to list.")
    ] = 20,
    window: Annotated[
        int,
        Query(ge=60, le=86400, description="Seconds back the histogram and failures cover."),
    ] = 3600,
) -> FleetRead:
    return await fleet_view(unit.session, unit.principal, failures=failures, window=window)
