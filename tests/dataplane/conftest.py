from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from sqlalchemy import update

from chroma_orch.db.models import Instance
from chroma_orch.http_server import header_timeout_protocol
from tests.dataplane.fake_upstream import FakeUpstream
from tests.e2e.service import free_port
from tests.helpers import bearer, create_tenant, wait_for


@dataclass
class Tenancy:
    """Two tenants, each with one instance (pending: no reconciler runs here)."""

    token: str
    instance_id: str
    other_token: str
    other_instance_id: str


@pytest.fixture
async def upstream() -> AsyncIterator[FakeUpstream]:
    server = await FakeUpstream().start()
    yield server
    await server.stop()


@pytest.fixture
async def served(api_app: FastAPI) -> AsyncIterator[str]:
    """``api_app`` served by uvicorn on a loopback port (its base URL), with the
    protocol and logging ``chroma-orch serve`` uses."""
    config = uvicorn.Config(
        api_app,
        port=free_port(),
        http=header_timeout_protocol(api_app.state.settings.header_timeout),
        log_config=None,
        lifespan="off",
        timeout_graceful_shutdown=5,  # a test that failed may leave connections open
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())

    async def started() -> bool:
        return server.started

    await wait_for(started, timeout=10)
    yield f"http://127.0.0.1:{config.port}"
    server.should_exit = True
    await task


@pytest.fixture
async def tenancy(client: httpx.AsyncClient) -> Tenancy:
    ids: list[str] = []
    tokens: list[str] = []
    for name in ("acme", "globex"):
        _, token = await create_tenant(client, name)
        created = await client.post("/v1/instances", json={"name": "main"}, headers=bearer(token))
        assert created.status_code == 202, created.text
        ids.append(created.json()["instance"]["id"])
        tokens.append(token)
    return Tenancy(tokens[0], ids[0], tokens[1], ids[1])


async def set_route(
    app: FastAPI, instance_id: str, phase: str, port: int | None, host: str = "127.0.0.1"
) -> None:
    """Write an instance's observed state as the reconciler would (without an event)."""
    async with app.state.ctx.sessions() as session:
        await session.execute(
            update(Instance)
            .where(Instance.id == uuid.UUID(instance_id))
            .values(
                phase=phase,
                endpoint_host=host if port else None,
                endpoint_port=port,
                observed_generation=Instance.generation,
            )
        )
        await session.commit()
