"""GET /metrics in the Prometheus text format (admin token, like every non-probe route)."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from chroma_orch.api.deps import Unit
from chroma_orch.api.problems import problem_responses
from chroma_orch.domain.fleet import refresh_fleet_gauges
from chroma_orch.errors import ForbiddenError, UnauthorizedError
from chroma_orch.telemetry.metrics import REGISTRY

router = APIRouter(tags=["operations"])


@router.get(
    "/metrics",
    operation_id="metrics",
    summary="Prometheus metrics (admin)",
    response_class=Response,
    responses={
        200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Metrics"},
        **problem_responses(UnauthorizedError, ForbiddenError),
    },
)
async def metrics(unit: Unit) -> Response:
    unit.principal.require_admin()
    await refresh_fleet_gauges(unit.session)
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
