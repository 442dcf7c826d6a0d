"""A large fleet written straight into the tables (SQLAlchemy Core bulk inserts, a
second for 10,000 rows) for tests of what reads it: the list's pages, the
dashboard. The rows are what the API would write for an instance that was
launched and reached ``phase``; nothing acts on them (run without a reconciler)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import insert, text
from sqlalchemy.ext.asyncio import AsyncEngine

from chroma_orch.db.models import Instance, Tenant

PHASES = ("running", "stopped", "running", "failed", "running")
"""Phases given in turn (so a fifth are failed, three fifths running)."""


def instance_row(tenant_id: uuid.UUID, number: int, at: datetime) -> dict[str, object]:
    phase = PHASES[number % len(PHASES)]
    return {
        "id": uuid.uuid4(),
        "tenant_id": tenant_id,
        "name": f"db-{number:05d}",
        "runtime": "local",
        "spec": {},
        "desired_state": "stopped" if phase == "stopped" else "running",
        "phase": phase,
        "generation": 1,
        "observed_generation": 1,
        "created_at": at,
        "updated_at": at,
        "phase_changed_at": at,
    }


async def insert_fleet(
    engine: AsyncEngine, instances: int, tenants: int = 100, prefix: str = "fleet"
) -> list[uuid.UUID]:
    """``tenants`` tenants named ``<prefix>-NNN`` and ``instances`` instances named
    ``db-NNNNN`` spread over them round-robin, created a second apart in number
    order; then ANALYZE, as autovacuum would soon. Returns the tenants' ids."""
    tenant_ids = [uuid.uuid4() for _ in range(tenants)]
    start = datetime.now(UTC) - timedelta(seconds=instances)
    async with engine.begin() as conn:
        await conn.execute(
            insert(Tenant),
            [{"id": tid, "name": f"{prefix}-{n:03d}"} for n, tid in enumerate(tenant_ids)],
        )
        rows = [
            instance_row(tenant_ids[n % tenants], n, start + timedelta(seconds=n))
            for n in range(instances)
        ]
        for chunk in range(0, len(rows), 2000):
            await conn.execute(insert(Instance), rows[chunk : chunk + 2000])
    async with engine.connect() as conn:
        await conn.execution_options(isolation_level="AUTOCOMMIT")
        await conn.execute(text("ANALYZE instances"))
        await conn.execute(text("ANALYZE tenants"))
    return tenant_ids
