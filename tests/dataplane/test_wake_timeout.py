"""How long a request that wakes a culled instance is held: the runtime's own
``wake_timeout`` (seconds for local servers, minutes for Fargate tasks), overridable;
and not at all when the instance will not start within it (a backoff first): then
503 with ``Retry-After`` at once. No reconciler runs here, so a wake never completes
and the hold shows in full."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text

from chroma_orch.app import create_app
from chroma_orch.db.session import create_engine
from chroma_orch.runtimes.ecs.runtime import EcsRuntime
from chroma_orch.settings import (
    CullingSettings,
    EcsSettings,
    LocalRuntimeSettings,
    ReconcilerSettings,
    Settings,
)
from tests.conftest import ADMIN_TOKEN, make_settings, port_window
from tests.helpers import bearer, create_tenant

HOLD_BOUND = 20.0
"""Generous: far above the short holds asked for here, far below the long ones."""


def _settings(database_url: str, data_dir: Path, **overrides: Any) -> Settings:
    return make_settings(
        database_url, data_dir, reconciler=ReconcilerSettings(enabled=False), **overrides
    )


def _local(wake_timeout: float) -> LocalRuntimeSettings:
    return LocalRuntimeSettings(
        port_range=port_window(), start_timeout=30, stop_grace=5, wake_timeout=wake_timeout
    )


@asynccontextmanager
async def _client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app: FastAPI = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        async with httpx.AsyncClient(
            transport=transport, base_url="http://testserver", headers=headers, timeout=120
        ) as http:
            yield http


async def _instance(http: httpx.AsyncClient, database_url: str, sql: str) -> tuple[str, str]:
    """A tenant's token and its wake-on-request instance, put in a state by ``sql``
    (as the culler or the reconciler would have left it)."""
    _, token = await create_tenant(http, "acme")
    body = {"name": "main", "wake_on_request": True}
    created = await http.post("/v1/instances", json=body, headers=bearer(token))
    instance_id: str = created.json()["instance"]["id"]
    engine = create_engine(database_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(text(sql), {"id": uuid.UUID(instance_id)})
    finally:
        await engine.dispose()
    return token, instance_id


CULLED = (
    "UPDATE instances SET desired_state = 'stopped', phase = 'stopped', culled_at = now(), "
    "next_reconcile_at = NULL WHERE id = :id"
)
BACKING_OFF = (
    "UPDATE instances SET phase = 'starting', failure_reason = 'CapacityUnavailable', "
    "next_reconcile_at = now() + interval '600 seconds' WHERE id = :id"
)


async def _timed(http: httpx.AsyncClient, token: str, instance_id: str) -> tuple[Any, float]:
    began = time.monotonic()
    answer = await http.get(f"/i/{instance_id}/api/v2/heartbeat", headers=bearer(token))
    return answer, time.monotonic() - began


@pytest.fixture
async def quick_local(database_url: str, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """The local runtime with a 0.5 s wake_timeout (and culling.wake_timeout unset)."""
    async with _client(_settings(database_url, tmp_path / "data", local=_local(0.5))) as http:
        yield http


async def test_the_hold_is_the_runtimes_wake_timeout(
    quick_local: httpx.AsyncClient, database_url: str
) -> None:
    token, instance_id = await _instance(quick_local, database_url, CULLED)
    answer, took = await _timed(quick_local, token, instance_id)
    assert answer.status_code == 503, answer.text
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert int(answer.headers["retry-after"]) >= 1
    assert 0.5 <= took < HOLD_BOUND  # held for local.wake_timeout, not 30 s
    woken = (await quick_local.get(f"/v1/instances/{instance_id}")).json()
    assert woken["desired_state"] == "running"  # the wake started it


async def test_culling_wake_timeout_overrides_the_runtimes(
    database_url: str, tmp_path: Path
) -> None:
    settings = _settings(
        database_url,
        tmp_path / "data",
        local=_local(600),
        culling=CullingSettings(wake_timeout=0.5),
    )
    async with _client(settings) as http:
        token, instance_id = await _instance(http, database_url, CULLED)
        answer, took = await _timed(http, token, instance_id)
        assert answer.status_code == 503
        assert took < HOLD_BOUND


async def test_a_start_further_off_than_the_hold_is_answered_at_once(
    database_url: str, tmp_path: Path
) -> None:
    """The instance waits out a 600 s capacity backoff before its next start: holding
    the request for the 60 s wake_timeout would end in a 503 all the same."""
    async with _client(_settings(database_url, tmp_path / "data", local=_local(60))) as http:
        token, instance_id = await _instance(http, database_url, BACKING_OFF)
        answer, took = await _timed(http, token, instance_id)
        assert answer.status_code == 503, answer.text
        assert answer.json()["code"] == "instance_not_running"
        assert "next start is in" in answer.json()["detail"]
        assert 590 <= int(answer.headers["retry-after"]) <= 600
        assert took < HOLD_BOUND


def test_each_runtime_declares_its_own_wake_timeout() -> None:
    assert LocalRuntimeSettings().wake_timeout == 30  # a local server is up in < 1 s
    assert EcsSettings().wake_timeout == 120  # a Fargate cold start takes 30-90 s
    assert EcsRuntime(EcsSettings(wake_timeout=300, storage="ephemeral")).wake_timeout == 300
    assert CullingSettings().wake_timeout is None  # unset: the runtime's
