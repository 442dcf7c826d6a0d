"""Admission limits answer 429 problem+json with Retry-After and change nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from chroma_orch.app import create_app
from chroma_orch.db.models import Instance
from chroma_orch.settings import LimitsSettings, ReconcilerSettings
from tests.conftest import ADMIN_TOKEN, make_settings
from tests.helpers import bearer, create_tenant


async def _client(
    database_url: str, data_dir: Path, overrides: dict[str, Any] | None = None, **limits: Any
) -> AsyncIterator[httpx.AsyncClient]:
    settings = make_settings(
        database_url,
        data_dir,
        limits=LimitsSettings(**limits),
        reconciler=ReconcilerSettings(enabled=False),
        **(overrides or {}),
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://t", headers=bearer(ADMIN_TOKEN)
        ) as http:
            http.app = app  # type: ignore[attr-defined]
            yield http


@pytest.fixture
async def start_limited(database_url: str, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    async for http in _client(
        database_url, tmp_path / "d", max_concurrent_starts=2, requests_per_second=1000, burst=1000
    ):
        yield http


@pytest.fixture
async def rate_limited(database_url: str, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    async for http in _client(database_url, tmp_path / "d", requests_per_second=0.2, burst=4):
        yield http


async def _live(http: httpx.AsyncClient) -> int:
    async with http.app.state.ctx.sessions() as session:  # type: ignore[attr-defined]
        return (await session.scalar(select(func.count()).select_from(Instance))) or 0


async def test_concurrent_start_limit(start_limited: httpx.AsyncClient) -> None:
    http = start_limited
    _, token = await create_tenant(http, "acme")
    for name in ("a", "b"):
        assert (
            await http.post("/v1/instances", json={"name": name}, headers=bearer(token))
        ).status_code == 202
    refused = await http.post("/v1/instances", json={"name": "c"}, headers=bearer(token))
    assert refused.status_code == 429
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.json()["code"] == "too_many_starts"
    assert int(refused.headers["retry-after"]) >= 1
    assert await _live(http) == 2


async def test_tenant_quota(database_url: str, tmp_path: Path) -> None:
    async for http in _client(database_url, tmp_path / "d", {"max_instances_per_tenant": 1}):
        _, token = await create_tenant(http, "acme")
        assert (
            await http.post("/v1/instances", json={"name": "a"}, headers=bearer(token))
        ).status_code == 202
        over = await http.post("/v1/instances", json={"name": "b"}, headers=bearer(token))
        assert over.status_code == 429
        assert over.json()["code"] == "quota_exceeded"


async def test_per_token_rate_limit(rate_limited: httpx.AsyncClient) -> None:
    http = rate_limited
    statuses = [(await http.get("/v1/tenants")).status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 200]
    limited = await http.post("/v1/tenants", json={"name": "never"})
    assert limited.status_code == 429
    assert limited.json()["code"] == "rate_limited"
    assert int(limited.headers["retry-after"]) >= 1
    assert (await http.get("/healthz")).status_code == 200  # probes are not limited
    async with http.app.state.ctx.sessions() as session:  # type: ignore[attr-defined]
        from chroma_orch.db.models import Tenant

        assert (await session.scalar(select(func.count()).select_from(Tenant))) == 0
