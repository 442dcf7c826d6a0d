"""Fixtures of the reconciler tests: the app's context, a fake runtime on the app's
port reservations, and a tenant."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from chroma_orch.context import AppContext
from chroma_orch.db.ports import PortReservationsInDb, port_pool
from chroma_orch.reconciler.loop import Reconciler
from chroma_orch.settings import Settings
from tests.helpers import bearer, converge, create_tenant
from tests.reconciler.doubles import DataFakeRuntime, FakeRuntime


@pytest.fixture
def ctx(api_app: FastAPI) -> AppContext:
    context: AppContext = api_app.state.ctx
    return context


@pytest.fixture
def runtime(ctx: AppContext, api_settings: Settings) -> FakeRuntime:
    return FakeRuntime(PortReservationsInDb(ctx.sessions, port_pool(api_settings)))


@pytest.fixture
def data_runtime(ctx: AppContext, api_settings: Settings, tmp_path: Path) -> DataFakeRuntime:
    """A fake runtime whose instances keep real data directories (under ``tmp_path``)."""
    return DataFakeRuntime(PortReservationsInDb(ctx.sessions, port_pool(api_settings)), tmp_path)


@pytest.fixture
def data_reconciler(
    ctx: AppContext, data_runtime: DataFakeRuntime, api_settings: Settings
) -> Reconciler:
    """A reconciler on ``data_runtime`` and the app's snapshot store."""
    return Reconciler(ctx.sessions, data_runtime, api_settings, store=ctx.store)


@pytest.fixture
async def tenant(client: httpx.AsyncClient) -> str:
    _, token = await create_tenant(client, "acme")
    return token


async def launch(client: httpx.AsyncClient, token: str, name: str) -> str:
    """Create an instance through the API, as its tenant; its id."""
    created = await client.post("/v1/instances", json={"name": name}, headers=bearer(token))
    assert created.status_code == 202, created.text
    instance_id: str = created.json()["instance"]["id"]
    return instance_id


async def instance_body(client: httpx.AsyncClient, token: str, instance_id: str) -> dict[str, Any]:
    """The instance as its tenant's GET shows it."""
    body: dict[str, Any] = (
        await client.get(f"/v1/instances/{instance_id}", headers=bearer(token))
    ).json()
    return body


async def instance_with_data(
    client: httpx.AsyncClient, reconciler: Reconciler, data_runtime: DataFakeRuntime
) -> tuple[str, str]:
    """(token, instance id) of a running instance of a new tenant whose data
    directory holds a file ``chroma.sqlite3`` reading "data"."""
    _, token = await create_tenant(client, "acme")
    created = await client.post("/v1/instances", json={"name": "main"}, headers=bearer(token))
    instance_id: str = created.json()["instance"]["id"]
    await converge(reconciler)
    data_runtime.data_path(instance_id).mkdir(exist_ok=True)
    (data_runtime.data_path(instance_id) / "chroma.sqlite3").write_text("data")
    return token, instance_id
