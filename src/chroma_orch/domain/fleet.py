"""Fleet-wide numbers read from the database (for metrics)."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from chroma_orch.db.models import OPEN_INTENT, Instance, Intent
from chroma_orch.domain.states import Phase
from chroma_orch.telemetry.metrics import INSTANCES, INTENTS_WAITING


async def refresh_fleet_gauges(session: AsyncSession) -> None:
    rows = await session.execute(
        select(Instance.phase, Instance.runtime, func.count())
        .where(Instance.phase != Phase.DELETED)
        .group_by(Instance.phase, Instance.runtime)
    )
    INSTANCES.clear()
    for phase, runtime, count in rows:
        INSTANCES.labels(phase, runtime).set(count)
    waiting = await session.scalar(
        select(func.count()).select_from(Intent).where(Intent.status.in_(OPEN_INTENT))
    )
    INTENTS_WAITING.set(waiting or 0)
