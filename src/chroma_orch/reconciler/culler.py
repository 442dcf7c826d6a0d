"""Idle culling: stop running instances that received no proxied traffic for their
idle timeout (instance's own, else its tenant's, else the service default).

The stop goes through the same path as a person's stop request (desired state,
generation, intent, event), marked with ``culled_at`` and an ``instance.culled``
event saying why, so a wake-on-request instance can be started again by traffic.
"""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chroma_orch.db.locks import LockKey, try_lock
from chroma_orch.db.models import Instance, Tenant, table_of
from chroma_orch.db.outbox import commit, record_event
from chroma_orch.db.rows import instance_of
from chroma_orch.domain.instances import InstancePolicy, InstanceService
from chroma_orch.domain.principal import SYSTEM
from chroma_orch.domain.states import Action, DesiredState, Phase

log = logging.getLogger(__name__)


async def cull_idle(
    sessions: async_sessionmaker[AsyncSession], policy: InstancePolicy, default_timeout: int
) -> list[uuid.UUID]:
    """One culling pass (on one replica at a time). Returns the instances stopped."""
    async with sessions() as session:
        if not await try_lock(session, LockKey.CULLER):
            return []
        culled = []
        for instance, timeout in await _idle(session, default_timeout):
            await _cull(session, policy, instance, timeout)
            culled.append(instance.id)
        await commit(session)
    for instance_id in culled:
        log.info("culled idle instance instance=%s", instance_id)
    return culled


async def _idle(session: AsyncSession, default_timeout: int) -> list[tuple[Instance, int]]:
    timeout = func.coalesce(
        Instance.idle_timeout_seconds, Tenant.idle_timeout_seconds, default_timeout
    )
    last_seen = func.coalesce(Instance.last_activity_at, Instance.phase_changed_at)
    found = await session.execute(
        select(*table_of(Instance).c, timeout.label("timeout"))
        .join(Tenant, Tenant.id == Instance.tenant_id)
        .where(
            Instance.desired_state == DesiredState.RUNNING,
            Instance.phase == Phase.RUNNING,
            Instance.upgrade_id.is_(None),  # an upgrade in progress is not idleness
            timeout > 0,
            last_seen < func.now() - func.make_interval(0, 0, 0, 0, 0, 0, timeout),
        )
        .with_for_update(of=Instance, skip_locked=True)
        .limit(500)
    )
    # transient rows: the stop below writes them, once
    return [(instance_of(row._mapping), int(row.timeout)) for row in found]


async def _cull(
    session: AsyncSession, policy: InstancePolicy, instance: Instance, timeout: int
) -> None:
    last_seen = instance.last_activity_at or instance.phase_changed_at
    now = datetime.now(UTC)
    idle = (now - last_seen).total_seconds()
    # the stop and culled_at in one write
    await InstanceService(session, SYSTEM, policy).apply(instance, Action.STOP, culled_at=now)
    record_event(
        session,
        type="instance.culled",
        instance_id=instance.id,
        tenant_id=instance.tenant_id,
        after={
            "reason": "idle",
            "idle_seconds": round(idle),
            "idle_timeout_seconds": timeout,
            "wake_on_request": instance.wake_on_request,
        },
    )
