"""A third runtime is one package plus one entry point, with no edit elsewhere.

The fake runtime (tests/fake_runtime) is registered here the way pip would install
it: a ``*.dist-info`` directory on ``sys.path`` naming ``fake`` in the
``chroma_orch.runtimes`` group. Then the registry finds it, the settings accept it,
and the service (real PostgreSQL, reconciler in process) runs an instance on it
from launch to delete.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from chroma_orch.app import create_app
from chroma_orch.runtimes import registry
from chroma_orch.settings import Settings
from tests.conftest import ADMIN_TOKEN, make_settings
from tests.fake_runtime import FakeRuntime, World, world
from tests.helpers import bearer, create_tenant, wait_for, wait_phase
from tests.runtimes.test_registry import register


@pytest.fixture
def fake_world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> World:
    register(tmp_path, monkeypatch, "chroma_orch_fake_runtime", fake="tests.fake_runtime:build")
    name = f"pluggable-{uuid.uuid4().hex}"
    monkeypatch.setenv("CHROMA_ORCH_FAKE__WORLD", name)  # the plugin's own settings group
    return world(name)


@pytest.fixture
async def fake_app(database_url: str, tmp_path: Path, fake_world: World) -> AsyncIterator[FastAPI]:
    app = create_app(make_settings(database_url, tmp_path / "data", runtime="fake"))
    async with app.router.lifespan_context(app):
        yield app


@pytest.fixture
async def client(fake_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=fake_app),
        base_url="http://testserver",
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
    ) as http:
        yield http


def test_the_registered_plugin_is_found_by_name(fake_world: World) -> None:
    assert "fake" in registry.names()
    assert Settings(runtime="fake").runtime == "fake"


def test_without_its_entry_point_the_name_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown runtime 'fake'"):
        Settings(runtime="fake")


async def test_the_service_runs_an_instance_on_the_plugin(
    client: httpx.AsyncClient, fake_app: FastAPI, fake_world: World
) -> None:
    runtime = getattr(fake_app.state.ctx.runtime, "inner", fake_app.state.ctx.runtime)
    assert isinstance(runtime, FakeRuntime)
    assert runtime.world is fake_world
    _, token = await create_tenant(client, "acme")
    launched = await client.post("/v1/instances", json={"name": "main"}, headers=bearer(token))
    assert launched.status_code == 202, launched.text
    instance_id = launched.json()["instance"]["id"]

    body = await wait_phase(client, instance_id, "running", headers=bearer(token))
    server = fake_world.servers[instance_id]
    assert server.alive
    assert body["endpoint"] is not None

    await client.post(f"/v1/instances/{instance_id}/stop", headers=bearer(token))
    await wait_phase(client, instance_id, "stopped", headers=bearer(token))
    assert not server.alive

    logs = await client.get(f"/v1/instances/{instance_id}/logs", headers=bearer(token))
    assert logs.json()["lines"][-1] == "exited: stopped"

    await client.delete(f"/v1/instances/{instance_id}", headers=bearer(token))

    async def gone() -> bool:
        answer = await client.get(f"/v1/instances/{instance_id}", headers=bearer(token))
        return answer.status_code == 404

    await wait_for(gone)
    assert instance_id not in fake_world.servers
    assert instance_id not in fake_world.data
