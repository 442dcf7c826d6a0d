"""The heartbeat pass (liveness after start) against real PostgreSQL, with the
runtime double: a server that lives but stops answering is restarted with reason
``Unresponsive`` after ``heartbeat.failures`` missed heartbeats in a row, as a crash."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import select, text

from chroma_orch.context import AppContext
from chroma_orch.db.models import Event, Instance
from chroma_orch.reconciler.loop import Reconciler
from chroma_orch.settings import HeartbeatSettings, Settings
from tests.helpers import bearer, converge
from tests.reconciler.conftest import instance_body
from tests.reconciler.doubles import FakeRuntime

FAILURES = 3


def _settings(settings: Settings, interval: float = 0.001, **changes: Any) -> Settings:
    reconciler = settings.reconciler.model_copy(
        update={"backoff_base": 0.01, "backoff_max": 0.05, "restart_limit": 2, **changes}
    )
    heartbeat = HeartbeatSettings(interval=interval, timeout=1.0, failures=FAILURES)
    return settings.model_copy(update={"reconciler": reconciler, "heartbeat": heartbeat})


@pytest.fixture
def reconciler(ctx: AppContext, runtime: FakeRuntime, api_settings: Settings) -> Reconciler:
    return Reconciler(ctx.sessions, runtime, _settings(api_settings))


async def _running(client: httpx.AsyncClient, token: str, reconciler: Reconciler) -> str:
    response = await client.post("/v1/instances", json={"name": "main"}, headers=bearer(token))
    instance_id: str = response.json()["instance"]["id"]
    await converge(reconciler)
    return instance_id


async def _misses(ctx: AppContext, instance_id: str) -> int:
    async with ctx.sessions() as session:
        found = await session.scalar(
            select(Instance.heartbeat_failures).where(Instance.id == uuid.UUID(instance_id))
        )
    return int(found or 0)


async def _events(ctx: AppContext, kind: str) -> list[dict[str, Any]]:
    async with ctx.sessions() as session:
        found = await session.scalars(select(Event).where(Event.type == kind).order_by(Event.seq))
        return [e.after or {} for e in found]


async def test_a_hung_server_is_restarted_as_unresponsive_after_the_threshold(
    client: httpx.AsyncClient,
    tenant: str,
    reconciler: Reconciler,
    runtime: FakeRuntime,
    ctx: AppContext,
) -> None:
    instance_id = await _running(client, tenant, reconciler)
    assert await reconciler.heartbeat_once() == 0  # it answers
    runtime.hung.add(instance_id)
    for missed in range(1, FAILURES):
        assert await reconciler.heartbeat_once() == 0
        assert await _misses(ctx, instance_id) == missed
        assert (await instance_body(client, tenant, instance_id))["phase"] == "running"
    assert await reconciler.observe_once() == 0  # alive: nothing for the liveness pass
    first = runtime.servers[instance_id].serial
    runtime.hung.clear()
    assert await reconciler.heartbeat_once() == 0  # answered again: the count starts anew
    assert await _misses(ctx, instance_id) == 0

    runtime.hung.add(instance_id)
    for _ in range(FAILURES - 1):
        assert await reconciler.heartbeat_once() == 0
    assert await reconciler.heartbeat_once() == 1  # the third miss in a row: due
    runtime.hung.clear()  # the next server answers
    await converge(reconciler)
    body = await instance_body(client, tenant, instance_id)
    assert body["phase"] == "running"
    assert body["restart_count"] == 1  # a crash of the server: it counts
    assert runtime.servers[instance_id].serial != first
    assert runtime.stops[instance_id] == 1  # the hung server was stopped, not left behind
    assert await _misses(ctx, instance_id) == 0
    (crashed,) = await _events(ctx, "instance.crashed")
    assert crashed["reason"] == "Unresponsive"
    assert f"missed {FAILURES} heartbeats in a row" in crashed["message"]


async def test_unresponsive_restarts_use_up_the_restart_budget(
    client: httpx.AsyncClient, tenant: str, reconciler: Reconciler, runtime: FakeRuntime
) -> None:
    instance_id = await _running(client, tenant, reconciler)
    runtime.hung.add(instance_id)  # every server it gets hangs
    for _ in range(3):  # restart_limit 2: two restarts, then failed
        for _ in range(FAILURES):
            await reconciler.heartbeat_once()
        await converge(reconciler)
    body = await instance_body(client, tenant, instance_id)
    assert body["phase"] == "failed"
    assert body["failure"]["reason"] == "Unresponsive"
    assert "gave up after 2 restarts" in body["failure"]["message"]
    assert not any(server.alive for server in runtime.servers.values())


async def test_one_silence_is_counted_once_however_many_passes_ask(
    client: httpx.AsyncClient, tenant: str, runtime: FakeRuntime, ctx: AppContext
) -> None:
    """Replicas take turns at the pass: two passes within half an interval (here, one
    right after the other) count one miss."""
    reconciler = Reconciler(ctx.sessions, runtime, _settings(ctx.settings, interval=60))
    instance_id = await _running(client, tenant, reconciler)
    runtime.hung.add(instance_id)
    for _ in range(FAILURES + 1):
        assert await reconciler.heartbeat_once() == 0
    assert await _misses(ctx, instance_id) == 1
    assert runtime.heartbeats[instance_id] == FAILURES + 1


async def test_disabled_asks_nothing(
    client: httpx.AsyncClient, tenant: str, runtime: FakeRuntime, ctx: AppContext
) -> None:
    settings = _settings(ctx.settings)
    settings.heartbeat.enabled = False
    reconciler = Reconciler(ctx.sessions, runtime, settings)
    instance_id = await _running(client, tenant, reconciler)
    runtime.hung.add(instance_id)
    for _ in range(FAILURES):
        assert await reconciler.heartbeat_once() == 0
    assert runtime.heartbeats[instance_id] == 0


async def test_a_hang_after_a_healthy_period_starts_a_fresh_budget(
    client: httpx.AsyncClient,
    tenant: str,
    reconciler: Reconciler,
    runtime: FakeRuntime,
    ctx: AppContext,
) -> None:
    """Two crashes long ago (the limit: 2), then the server ran for longer than
    restart_budget_reset: a hang is the first restart of a fresh budget, not the end."""
    instance_id = await _running(client, tenant, reconciler)
    reset = reconciler.settings.reconciler.restart_budget_reset
    async with ctx.sessions() as session:
        await session.execute(
            text(
                "UPDATE instances SET restart_count = 2, "
                "phase_changed_at = now() - make_interval(secs => :s) WHERE id = :id"
            ),
            {"id": uuid.UUID(instance_id), "s": reset + 1},
        )
        await session.commit()
    runtime.hung.add(instance_id)
    for _ in range(FAILURES):
        await reconciler.heartbeat_once()
    runtime.hung.clear()
    await converge(reconciler)
    body = await instance_body(client, tenant, instance_id)
    assert (body["phase"], body["restart_count"]) == ("running", 1)


async def test_a_fleet_larger_than_one_heartbeat_pass_is_asked_in_rounds(
    client: httpx.AsyncClient,
    tenant: str,
    reconciler: Reconciler,
    runtime: FakeRuntime,
    ctx: AppContext,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each pass asks a batch of servers, the next pass after the last id asked: a
    hung server beyond the first batch is asked too (without the cursor, the same
    first batch came back every pass and it was never asked)."""
    ids = []
    for n in range(3):
        created = await client.post(
            "/v1/instances", json={"name": f"fleet-{n}"}, headers=bearer(tenant)
        )
        ids.append(created.json()["instance"]["id"])
    await converge(reconciler)
    monkeypatch.setattr("chroma_orch.reconciler.heartbeat._BATCH", 1)
    last = max(ids, key=uuid.UUID)
    runtime.hung.add(last)
    runtime.heartbeats.clear()
    for _ in range(3):
        await reconciler.heartbeat_once()
    assert dict(runtime.heartbeats) == dict.fromkeys(ids, 1)  # each asked once in the round
    assert await _misses(ctx, last) == 1


async def test_a_batch_is_asked_in_chunks(
    client: httpx.AsyncClient,
    tenant: str,
    reconciler: Reconciler,
    runtime: FakeRuntime,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A pass asks its batch in chunks spread over half the interval, not all at
    once: at 10,000 instances, 5,000 probes at once were a burst of the replica's CPU
    every interval."""
    for n in range(5):
        await client.post("/v1/instances", json={"name": f"fleet-{n}"}, headers=bearer(tenant))
    await converge(reconciler)
    monkeypatch.setattr("chroma_orch.reconciler.heartbeat._CHUNK", 2, raising=False)
    runtime.heartbeats.clear()
    runtime.heartbeat_calls.clear()
    await reconciler.heartbeat_once()
    assert runtime.heartbeat_calls == [2, 2, 1]
    assert set(runtime.heartbeats.values()) == {1}  # each asked once
    assert len(runtime.heartbeats) == 5
