"""Probes and metrics reflect reality."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from chroma_orch.app import create_app
from chroma_orch.context import AppContext
from chroma_orch.db.embedded import EmbeddedPostgres
from chroma_orch.reconciler.loop import Reconciler
from tests.conftest import ADMIN_TOKEN, make_settings
from tests.helpers import bearer, create_tenant


async def test_metrics_need_admin_and_count_the_fleet(client: httpx.AsyncClient) -> None:
    _, token = await create_tenant(client, "acme")
    for name in ("a", "b"):
        await client.post("/v1/instances", json={"name": name}, headers=bearer(token))
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert 'chroma_orch_instances{phase="pending",runtime="local"} 2.0' in text
    assert "chroma_orch_intents_waiting 2.0" in text
    assert (
        'chroma_orch_http_requests_total{method="POST",route="/v1/instances",status="202"}' in text
    )
    assert (await client.get("/metrics", headers=bearer(token))).status_code == 403
    anonymous = await client.get("/metrics", headers={"Authorization": ""})
    assert anonymous.status_code == 401


async def test_every_response_carries_a_request_id(client: httpx.AsyncClient) -> None:
    generated = await client.get("/healthz")
    assert len(generated.headers["x-request-id"]) == 32
    echoed = await client.get("/healthz", headers={"X-Request-ID": "abc-123"})
    assert echoed.headers["x-request-id"] == "abc-123"
    hostile_id = "a b\r" * 40
    hostile = await client.get("/healthz", headers={b"X-Request-ID": hostile_id.encode()})
    assert hostile.headers["x-request-id"] != hostile_id
    assert len(hostile.headers["x-request-id"]) == 32


@pytest.fixture
async def live_app(database_url: str, tmp_path: Path) -> AsyncIterator[FastAPI]:
    app = create_app(make_settings(database_url, tmp_path / "data"))
    async with app.router.lifespan_context(app):
        yield app


async def _ready(app: FastAPI) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        return await http.get("/readyz")


async def test_readiness_follows_the_database_and_the_reconciler(
    live_app: FastAPI, pg_cluster: EmbeddedPostgres | None
) -> None:
    if pg_cluster is None:
        pytest.skip("needs the embedded cluster, to stop and start it")
    async with asyncio.timeout(120):  # a hang here fails with a traceback, not a CI timeout
        ready = await _ready(live_app)
        assert ready.status_code == 200, ready.text
        checks = {"database": "ok", "migrations": "ok", "reconciler": "ok", "loops": "ok"}
        assert ready.json()["checks"] == checks

        await asyncio.to_thread(pg_cluster.stop)  # the app's loop keeps running meanwhile
        try:
            down = await _ready(live_app)
            assert down.status_code == 503
            assert down.json()["checks"]["database"].startswith("error")
        finally:
            await asyncio.to_thread(pg_cluster.start)
        recovered = await _ready(live_app)
        assert recovered.status_code == 200, recovered.text

        ctx: AppContext = live_app.state.ctx
        assert isinstance(ctx.reconciler, Reconciler)
        await ctx.reconciler.stop()  # as if its loop had died an hour ago
        ctx.reconciler._last_pass = time.monotonic() - 3600
        stalled = await _ready(live_app)
        assert stalled.status_code == 503
        assert stalled.json()["checks"]["reconciler"].startswith("stalled")

        ctx.loops.failed = "listener"  # what Loops records when a loop body crashes
        crashed = await _ready(live_app)
        assert crashed.status_code == 503
        assert crashed.json()["checks"]["loops"] == "crashed: listener"


async def test_admin_token_is_never_logged(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    from chroma_orch.telemetry.log_setup import JsonFormatter, TextFormatter

    caplog.set_level("DEBUG")
    _, token = await create_tenant(client, "acme")
    await client.get("/v1/instances", headers=bearer(token))
    await client.get("/v1/instances", headers=bearer(token + "x"))
    lines = [JsonFormatter().format(r) for r in caplog.records]
    lines += [TextFormatter().format(r) for r in caplog.records]
    assert lines
    assert not [line for line in lines if ADMIN_TOKEN in line or token in line]
