"""Snapshot schedules against real PostgreSQL: the API, and the scheduler with a
reconciler whose runtime keeps real data directories (snapshots through the real
directory store and archive format)."""

from __future__ import annotations

import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, text, update

from chroma_orch.context import AppContext
from chroma_orch.db.models import Instance, Snapshot
from chroma_orch.db.ports import PortReservationsInDb, port_pool
from chroma_orch.reconciler.loop import Reconciler
from chroma_orch.reconciler.snapshot_scheduler import SnapshotScheduler
from chroma_orch.settings import Settings
from tests.conftest import ADMIN_TOKEN
from tests.helpers import bearer, converge, create_tenant
from tests.reconciler.conftest import launch
from tests.reconciler.doubles import DataFakeRuntime


@pytest.fixture
def data_runtime(ctx: AppContext, api_settings: Settings, tmp_path: Path) -> DataFakeRuntime:
    return DataFakeRuntime(PortReservationsInDb(ctx.sessions, port_pool(api_settings)), tmp_path)


@pytest.fixture
def reconciler(
    ctx: AppContext, data_runtime: DataFakeRuntime, api_settings: Settings
) -> Reconciler:
    return Reconciler(ctx.sessions, data_runtime, api_settings, store=ctx.store)


@pytest.fixture
def scheduler(ctx: AppContext) -> SnapshotScheduler:
    return SnapshotScheduler(ctx.sessions, ctx.policy, ctx.snapshot_policy, batch=2)


async def _scheduled(ctx: AppContext, instance_id: str) -> list[tuple[str, str]]:
    """The instance's scheduled snapshots (phase, id), oldest first."""
    async with ctx.engine.connect() as conn:
        found = await conn.execute(
            select(Snapshot.phase, Snapshot.id)
            .where(Snapshot.instance_id == uuid.UUID(instance_id), Snapshot.kind == "scheduled")
            .order_by(Snapshot.created_at)
        )
        return [(phase, str(sid)) for phase, sid in found]


async def _missed(ctx: AppContext, days: int) -> None:
    """Every instance's next scheduled snapshot was due ``days`` ago (the service was down)."""
    async with ctx.engine.begin() as conn:
        await conn.execute(
            update(Instance)
            .where(Instance.next_snapshot_at.is_not(None))
            .values(next_snapshot_at=func.now() - text(f"interval '{days} days'"))
        )


async def _next_in(ctx: AppContext, instance_id: str) -> float:
    """Seconds until the instance's next scheduled snapshot."""
    async with ctx.engine.connect() as conn:
        seconds = await conn.scalar(
            select(func.extract("epoch", Instance.next_snapshot_at - func.now())).where(
                Instance.id == uuid.UUID(instance_id)
            )
        )
    assert seconds is not None
    return float(seconds)


async def test_schedules_are_set_read_overridden_and_cleared(client: httpx.AsyncClient) -> None:
    tenant_id, token = await create_tenant(client, "acme")
    _, other = await create_tenant(client, "other")
    instance_id = await launch(client, token, "main")
    on_instance = f"/v1/instances/{instance_id}/snapshot-schedule"
    on_tenant = f"/v1/tenants/{tenant_id}/snapshot-schedule"
    assert (await client.get(on_instance, headers=bearer(token))).status_code == 404
    daily = {"every": 86400, "keep": 7}
    put = await client.put(on_tenant, json=daily, headers=bearer(token))
    assert put.status_code == 200, put.text
    assert put.json()["instance_id"] is None
    inherited = (await client.get(on_instance, headers=bearer(token))).json()
    assert (inherited["every"], inherited["keep"], inherited["instance_id"]) == (86400, 7, None)
    hourly = await client.put(on_instance, json={"every": 3600, "keep": 3}, headers=bearer(token))
    assert hourly.json()["instance_id"] == instance_id
    assert (await client.get(on_instance, headers=bearer(token))).json()["every"] == 3600
    # another tenant sees neither; an admin sees both
    for path in (on_instance, on_tenant):
        assert (await client.get(path, headers=bearer(other))).status_code == 404
        assert (await client.put(path, json=daily, headers=bearer(other))).status_code == 404
        assert (await client.delete(path, headers=bearer(other))).status_code == 404
        assert (await client.get(path, headers=bearer(ADMIN_TOKEN))).status_code == 200
    assert (await client.delete(on_instance, headers=bearer(token))).status_code == 204
    assert (await client.get(on_instance, headers=bearer(token))).json()["every"] == 86400
    assert (await client.delete(on_tenant, headers=bearer(token))).status_code == 204
    assert (await client.get(on_instance, headers=bearer(token))).status_code == 404
    assert (await client.get(on_tenant, headers=bearer(token))).status_code == 404


@pytest.mark.parametrize(
    "body",
    [{"every": 10, "keep": 1}, {"every": 3600, "keep": 0}, {"every": "3600", "keep": 1}, {}],
)
async def test_bad_schedules_are_refused(client: httpx.AsyncClient, body: dict[str, Any]) -> None:
    tenant_id, token = await create_tenant(client, "acme")
    answer = await client.put(
        f"/v1/tenants/{tenant_id}/snapshot-schedule", json=body, headers=bearer(token)
    )
    assert answer.status_code == 422
    assert answer.headers["content-type"].startswith("application/problem+json")


async def test_due_snapshots_are_taken_once_after_downtime_and_pruned_to_keep(
    client: httpx.AsyncClient,
    ctx: AppContext,
    reconciler: Reconciler,
    scheduler: SnapshotScheduler,
    data_runtime: DataFakeRuntime,
) -> None:
    tenant_id, token = await create_tenant(client, "acme")
    running = await launch(client, token, "running")
    stopped = await launch(client, token, "stopped")
    gone = await launch(client, token, "gone")
    await converge(reconciler)
    await client.post(f"/v1/instances/{stopped}/stop", headers=bearer(token))
    await client.delete(f"/v1/instances/{gone}", params={"purge": "true"}, headers=bearer(token))
    await converge(reconciler)
    for instance_id in (running, stopped):
        data_runtime.data_path(instance_id).mkdir(exist_ok=True)
        (data_runtime.data_path(instance_id) / "chroma.sqlite3").write_text(instance_id)
    schedule = {"every": 3600, "keep": 2}
    await client.put(f"/v1/tenants/{tenant_id}/snapshot-schedule", json=schedule,
                     headers=bearer(token))  # fmt: skip
    starts = data_runtime.starts[stopped]
    assert sorted(map(str, await scheduler.run_once())) == sorted([running, stopped])
    assert await scheduler.run_once() == []  # not due again for an hour
    await converge(reconciler)
    for instance_id in (running, stopped):
        assert [phase for phase, _ in await _scheduled(ctx, instance_id)] == ["ready"]
    assert data_runtime.starts[stopped] == starts  # snapshotted without starting it
    assert await _scheduled(ctx, gone) == []

    for _ in range(3):  # down for ten days each time: one snapshot per instance, not 240
        await _missed(ctx, days=10)
        assert len(await scheduler.run_once()) == 2
        assert 3590 < await _next_in(ctx, running) <= 3600
        await converge(reconciler)
    for instance_id in (running, stopped):
        kept = await _scheduled(ctx, instance_id)
        assert [phase for phase, _ in kept] == ["ready", "ready"]
    assert (
        len(list((ctx.settings.snapshots.directory(ctx.settings.data_dir)).rglob("*.tar.zst"))) == 4
    )


async def test_an_instances_schedule_overrides_its_tenants_and_a_lower_keep_prunes(
    client: httpx.AsyncClient,
    ctx: AppContext,
    reconciler: Reconciler,
    scheduler: SnapshotScheduler,
) -> None:
    tenant_id, token = await create_tenant(client, "acme")
    instance_id = await launch(client, token, "main")
    await converge(reconciler)
    await client.put(f"/v1/tenants/{tenant_id}/snapshot-schedule",
                     json={"every": 86400, "keep": 5}, headers=bearer(token))  # fmt: skip
    for _ in range(3):
        await _missed(ctx, days=2)
        await scheduler.run_once()
        await converge(reconciler)
    assert len(await _scheduled(ctx, instance_id)) == 3
    await client.put(f"/v1/instances/{instance_id}/snapshot-schedule",
                     json={"every": 3600, "keep": 1}, headers=bearer(token))  # fmt: skip
    assert 3590 < await _next_in(ctx, instance_id) <= 3600  # the shorter period applies now
    await _missed(ctx, days=1)
    await scheduler.run_once()
    await converge(reconciler)
    assert [phase for phase, _ in await _scheduled(ctx, instance_id)] == ["ready"]


async def test_no_scheduled_snapshot_where_the_runtime_cannot_snapshot(
    client: httpx.AsyncClient, ctx: AppContext
) -> None:
    """A policy saying the runtime cannot copy data (ECS with EFS or ephemeral
    storage): a due instance is passed over, with no snapshot row that would fail."""
    policy = replace(ctx.snapshot_policy, can_snapshot=False)
    scheduler = SnapshotScheduler(ctx.sessions, ctx.policy, policy, batch=2)
    tenant_id, token = await create_tenant(client, "acme")
    instance_id = await launch(client, token, "main")
    schedule = {"every": 3600, "keep": 2}
    await client.put(f"/v1/tenants/{tenant_id}/snapshot-schedule", json=schedule,
                     headers=bearer(token))  # fmt: skip
    assert await scheduler.run_once() == []
    await _missed(ctx, 1)
    assert await scheduler.run_once() == []
    assert await _scheduled(ctx, instance_id) == []
