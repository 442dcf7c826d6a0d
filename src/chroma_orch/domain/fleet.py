"""The fleet view (GET /v1/fleet, admin) and the fleet gauges of /metrics.

Both read the instance counts through ``db.fleet.instance_counts``, so the view
and the gauges never disagree about what they count.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from pydantic import BaseModel, Field
from sqlalchemy.ext.asyncio import AsyncSession

from chroma_orch.db import fleet as queries
from chroma_orch.domain.principal import Principal
from chroma_orch.telemetry.metrics import INSTANCES, INTENTS_WAITING

HISTOGRAM_BUCKETS = 20
START_SAMPLE = 1000
"""How many of the latest starts in the window the histogram covers."""


class StartHistogram(BaseModel):
    """Seconds from a start's request (or automatic restart) to ``running``."""

    window_seconds: int = Field(description="The window the starts were taken from.")
    count: int = Field(
        description=f"Starts counted: the latest (at most {START_SAMPLE}) in the window."
    )
    bucket_seconds: float = Field(
        description="Width of each bucket; bucket i holds [i*w, (i+1)*w) s, the last "
        "also the slowest start."
    )
    buckets: list[int] = Field(description=f"{HISTOGRAM_BUCKETS} counts, fastest first.")
    max_seconds: float | None = Field(description="The slowest start counted.")
    p50_seconds: float | None = Field(description="Median start time.")
    p90_seconds: float | None = Field(description="90th percentile start time.")


class FleetFailure(BaseModel):
    seq: int = Field(description="The event's sequence number.")
    event: str = Field(
        description="instance.failed (gave up) or instance.crashed (will be restarted)."
    )
    instance_id: uuid.UUID | None
    instance_name: str | None
    tenant_id: uuid.UUID | None
    tenant_name: str | None
    reason: str | None = Field(description="Machine-readable reason, e.g. StartTimeout.")
    message: str | None
    at: datetime


class FleetRead(BaseModel):
    """The fleet at a glance, for the dashboard's fleet view."""

    total: int = Field(description="Instances not deleted.")
    by_phase: dict[str, int] = Field(description="Instances not deleted, by observed phase.")
    by_runtime: dict[str, int] = Field(description="Instances not deleted, by runtime.")
    start_times: StartHistogram
    failures: list[FleetFailure] = Field(
        description="The latest failures and crashes in the window, newest first."
    )


async def fleet_view(
    session: AsyncSession, principal: Principal, *, failures: int, window: int
) -> FleetRead:
    principal.require_admin()
    since = datetime.now(UTC) - timedelta(seconds=window)
    counts = await queries.instance_counts(session)
    by_phase: dict[str, int] = {}
    by_runtime: dict[str, int] = {}
    for phase, runtime, count in counts:
        by_phase[phase] = by_phase.get(phase, 0) + count
        by_runtime[runtime] = by_runtime.get(runtime, 0) + count
    times = await queries.start_times(
        session, since=since, sample=START_SAMPLE, buckets=HISTOGRAM_BUCKETS
    )
    recent = await queries.recent_failures(session, since=since, limit=failures)
    return FleetRead(
        total=sum(by_phase.values()),
        by_phase=by_phase,
        by_runtime=by_runtime,
        start_times=StartHistogram(
            window_seconds=window,
            count=times.count,
            bucket_seconds=times.upper / HISTOGRAM_BUCKETS,
            buckets=times.buckets,
            max_seconds=times.upper if times.count else None,
            p50_seconds=times.p50,
            p90_seconds=times.p90,
        ),
        failures=[
            FleetFailure(
                seq=f.seq,
                event=f.event,
                instance_id=f.instance_id,
                instance_name=f.instance_name,
                tenant_id=f.tenant_id,
                tenant_name=f.tenant_name,
                reason=f.reason,
                message=f.message,
                at=f.at,
            )
            for f in recent
        ],
    )


async def refresh_fleet_gauges(session: AsyncSession) -> None:
    counts = await queries.instance_counts(session)
    INSTANCES.clear()
    for phase, runtime, count in counts:
        INSTANCES.labels(phase, runtime).set(count)
    INTENTS_WAITING.set(await queries.intents_waiting(session))
