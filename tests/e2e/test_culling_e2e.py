"""Idle culling stops an idle instance and leaves a busy one; wake-on-request
brings a culled instance back and the held request succeeds."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from chroma_orch.db.session import create_engine
from tests.e2e.service import Service, running_service
from tests.helpers import bearer, create_tenant, wait_for, wait_phase


@pytest.fixture
async def culling_service(database_url: str, tmp_path: Path) -> AsyncIterator[Service]:
    async with running_service(
        database_url,
        tmp_path / "data",
        CHROMA_ORCH_CULLING__INTERVAL="0.3",
        CHROMA_ORCH_CULLING__WAKE_TIMEOUT="30",
        CHROMA_ORCH_PROXY__ACTIVITY_FLUSH_INTERVAL="0.2",
        CHROMA_ORCH_PROXY__ROUTE_CACHE_TTL="0",
    ) as service:
        yield service


async def _launch(http: httpx.AsyncClient, name: str, **options: Any) -> str:
    created = await http.post("/v1/instances", json={"name": name, **options})
    assert created.status_code == 202, created.text
    instance_id: str = created.json()["instance"]["id"]
    return instance_id


async def _keep_busy(http: httpx.AsyncClient, instance_id: str) -> None:
    while True:
        response = await http.get(f"/i/{instance_id}/api/v2/heartbeat")
        assert response.status_code == 200, response.text
        await asyncio.sleep(0.3)


async def _culled_events(database_url: str) -> list[dict[str, Any]]:
    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(
                text("SELECT instance_id, after FROM events WHERE type = 'instance.culled'")
            )
            return [{"instance_id": str(r.instance_id), **r.after} for r in rows]
    finally:
        await engine.dispose()


async def test_idle_instances_are_culled_busy_ones_kept_and_woken_on_request(
    culling_service: Service, database_url: str
) -> None:
    async with culling_service.client() as admin:
        _, token = await create_tenant(admin, "acme")
    async with culling_service.client(token) as http:
        idle = await _launch(http, "idle", idle_timeout_seconds=2, wake_on_request=True)
        busy = await _launch(http, "busy", idle_timeout_seconds=2)
        plain = await _launch(http, "plain", idle_timeout_seconds=2)
        never = await _launch(http, "never")  # no timeout anywhere: never culled
        for instance_id in (idle, busy, plain, never):
            await wait_phase(http, instance_id, "running")
        pinger = asyncio.create_task(_keep_busy(http, busy))
        try:

            async def culled() -> bool:
                bodies = [(await http.get(f"/v1/instances/{i}")).json() for i in (idle, plain)]
                return all(b["phase"] == "stopped" and b["culled_at"] for b in bodies)

            await wait_for(culled, timeout=30, interval=0.2)
            assert (await http.get(f"/v1/instances/{busy}")).json()["phase"] == "running"
            assert (await http.get(f"/v1/instances/{never}")).json()["phase"] == "running"
        finally:
            pinger.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pinger
        events = {e["instance_id"]: e for e in await _culled_events(database_url)}
        assert set(events) == {idle, plain}
        assert events[idle]["reason"] == "idle"
        assert events[idle]["idle_timeout_seconds"] == 2

        refused = await http.get(f"/i/{plain}/api/v2/heartbeat")
        assert refused.status_code == 503
        assert int(refused.headers["retry-after"]) >= 1

        woken = await http.get(f"/i/{idle}/api/v2/heartbeat", headers=bearer(token))
        assert woken.status_code == 200, woken.text
        body = (await http.get(f"/v1/instances/{idle}")).json()
        assert body["phase"] == "running"
        assert body["culled_at"] is None
