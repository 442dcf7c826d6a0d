"""Small helpers shared by tests (not fixtures)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from chroma_orch.context import AppContext
from chroma_orch.db.models import OPEN_INTENT, Instance, Intent, IntentStatus
from chroma_orch.reconciler.loop import Reconciler


async def create_tenant(client: httpx.AsyncClient, name: str) -> tuple[str, str]:
    """Create a tenant and a token for it; returns (tenant id, token)."""
    response = await client.post("/v1/tenants", json={"name": name})
    assert response.status_code == 201, response.text
    tenant_id = response.json()["id"]
    response = await client.post(f"/v1/tenants/{tenant_id}/tokens", json={"name": "t"})
    assert response.status_code == 201, response.text
    return tenant_id, response.json()["token"]


async def settle(engine: AsyncEngine, instance_id: str | uuid.UUID, phase: str) -> None:
    """Record ``phase`` as observed and settle the open intents, as the reconciler
    would (for tests that run without one)."""
    instance_id = uuid.UUID(str(instance_id))
    async with engine.begin() as conn:
        await conn.execute(
            update(Instance)
            .where(Instance.id == instance_id)
            .values(phase=phase, observed_generation=Instance.generation, next_reconcile_at=None)
        )
        await conn.execute(
            update(Intent)
            .where(Intent.instance_id == instance_id, Intent.status.in_(OPEN_INTENT))
            .values(status=IntentStatus.SUCCEEDED, completed_at=func.now())
        )


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def wait_for(
    probe: Callable[[], Awaitable[Any]], *, timeout: float = 30.0, interval: float = 0.05
) -> Any:
    """Call ``probe`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = await probe()
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s (last: {last!r})")


async def wait_phase(
    client: httpx.AsyncClient,
    instance_id: str,
    phase: str,
    *,
    headers: dict[str, str] | None = None,
    timeout: float = 30.0,
) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        response = await client.get(f"/v1/instances/{instance_id}", headers=headers)
        body: dict[str, Any] = response.json()
        converged = body.get("observed_generation") == body.get("generation")
        return body if body.get("phase") == phase and converged else None

    result: dict[str, Any] = await wait_for(probe, timeout=timeout)
    return result


async def converge(reconciler: Reconciler, timeout: float = 30.0) -> None:
    """Run reconciler passes until nothing is due or in flight (requeues included,
    e.g. a stopping ECS task waiting out the address quarantine)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        claimed = await reconciler.run_once()
        await reconciler.drain()
        if not claimed:
            async with reconciler.sessions() as session:
                due = await session.scalar(
                    select(func.count())
                    .select_from(Instance)
                    .where(Instance.next_reconcile_at.is_not(None))
                )
            if not due:
                return
            await asyncio.sleep(0.02)
    raise AssertionError("did not converge")


async def instance_row(ctx: AppContext, instance_id: str) -> Instance | None:
    """The instance's row as it is now."""
    async with ctx.sessions() as session:
        return await session.get(Instance, uuid.UUID(instance_id))
