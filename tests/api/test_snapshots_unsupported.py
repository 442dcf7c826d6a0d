"""A runtime that cannot copy its instances' data at all (like ECS with EFS or
ephemeral storage: neither ``native_snapshots`` nor ``data_directories``): the API
takes no pre_delete snapshot on DELETE, and refuses snapshots and restores with a
409 ``snapshots_unsupported`` instead of accepting them to fail later.

The runtime is the fake plugin (tests/fake_runtime), registered for the test the
way pip would install it; real PostgreSQL, reconciler off."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select

from chroma_orch.app import create_app
from chroma_orch.db.models import Snapshot
from chroma_orch.runtimes.base import can_snapshot
from chroma_orch.settings import ReconcilerSettings
from tests.conftest import ADMIN_TOKEN, make_settings
from tests.fake_runtime import world
from tests.helpers import bearer, create_tenant
from tests.runtimes.test_registry import register


@pytest.fixture
async def client(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[httpx.AsyncClient]:
    register(tmp_path, monkeypatch, "chroma_orch_fake_runtime", fake="tests.fake_runtime:build")
    name = f"nosnap-{uuid.uuid4().hex}"
    monkeypatch.setenv("CHROMA_ORCH_FAKE__WORLD", name)
    world(name)
    settings = make_settings(
        database_url,
        tmp_path / "data",
        runtime="fake",
        reconciler=ReconcilerSettings(enabled=False),
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        assert not can_snapshot(app.state.ctx.runtime)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://testserver",
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        ) as http:
            http.app = app  # type: ignore[attr-defined]
            yield http


def _app(client: httpx.AsyncClient) -> FastAPI:
    app: FastAPI = client.app  # type: ignore[attr-defined]
    return app


async def _snapshots(app: FastAPI) -> int:
    async with app.state.ctx.engine.connect() as conn:
        return await conn.scalar(select(func.count()).select_from(Snapshot)) or 0


async def _instance(client: httpx.AsyncClient, token: str) -> str:
    created = await client.post("/v1/instances", json={"name": "main"}, headers=bearer(token))
    assert created.status_code == 202, created.text
    instance_id: str = created.json()["instance"]["id"]
    return instance_id


async def test_a_snapshot_is_refused_with_a_clear_problem(client: httpx.AsyncClient) -> None:
    _, token = await create_tenant(client, "acme")
    instance_id = await _instance(client, token)
    refused = await client.post(f"/v1/instances/{instance_id}/snapshots", headers=bearer(token))
    assert refused.status_code == 409, refused.text
    assert refused.headers["content-type"].startswith("application/problem+json")
    problem = refused.json()
    assert problem["code"] == "snapshots_unsupported"
    assert "'fake' runtime" in problem["detail"]
    assert "EFS or ephemeral" in problem["detail"]
    restore = await client.post(
        f"/v1/instances/{instance_id}/restore",
        json={"snapshot_id": str(uuid.uuid4())},
        headers=bearer(token),
    )
    assert (restore.status_code, restore.json()["code"]) == (409, "snapshots_unsupported")
    assert await _snapshots(_app(client)) == 0


async def test_delete_takes_no_pre_delete_snapshot(client: httpx.AsyncClient) -> None:
    _, token = await create_tenant(client, "acme")
    instance_id = await _instance(client, token)
    deleted = await client.delete(f"/v1/instances/{instance_id}", headers=bearer(token))
    assert deleted.status_code == 202, deleted.text
    assert await _snapshots(_app(client)) == 0
    undelete = await client.post(f"/v1/instances/{instance_id}/undelete", headers=bearer(token))
    assert undelete.status_code == 409
