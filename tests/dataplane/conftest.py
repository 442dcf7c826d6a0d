from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import update

from chroma_orch.db.models import Instance
from tests.dataplane.fake_upstream import FakeUpstream
from tests.helpers import bearer, create_tenant


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
