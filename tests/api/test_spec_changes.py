"""A spec change applied by the reconciler (the service on the fake runtime, reconciler
on): a running instance restarts on its new spec; a change racing a stop ends stopped
with the new spec, which its next start runs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.api.fake_app import fake_service
from tests.fake_runtime import World
from tests.helpers import bearer, create_tenant, wait_phase


@pytest.fixture
async def service(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[httpx.AsyncClient, World]]:
    async with fake_service(database_url, tmp_path, monkeypatch) as (client, _, servers):
        yield client, servers


async def _running(client: httpx.AsyncClient, token: str, name: str = "main") -> str:
    launched = await client.post("/v1/instances", json={"name": name}, headers=bearer(token))
    assert launched.status_code == 202, launched.text
    instance_id: str = launched.json()["instance"]["id"]
    await wait_phase(client, instance_id, "running", headers=bearer(token))
    return instance_id


async def test_a_spec_change_restarts_the_server_on_the_new_spec(
    service: tuple[httpx.AsyncClient, World],
) -> None:
    client, servers = service
    _, token = await create_tenant(client, "acme")
    instance_id = await _running(client, token)
    first = servers.servers[instance_id]
    assert (first.spec.memory_mib, first.spec.chroma_version) == (1024, "1.5.9")
    changed = await client.patch(
        f"/v1/instances/{instance_id}",
        json={"spec": {"memory_mib": 2048, "chroma_version": "1.5.8"}},
        headers=bearer(token),
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["generation"] == 2
    body = await wait_phase(client, instance_id, "running", headers=bearer(token))
    assert body["observed_generation"] == 2
    server = servers.servers[instance_id]
    assert server.serial != first.serial  # a new server
    assert not first.alive
    assert (server.spec.memory_mib, server.spec.chroma_version) == (2048, "1.5.8")
    assert server.generation == 2
    assert instance_id in servers.data  # its data kept (the fake keeps it by instance)


async def _race(client: httpx.AsyncClient, token: str, instance_id: str) -> list[int]:
    url = f"/v1/instances/{instance_id}"
    answers = await asyncio.gather(
        client.patch(url, json={"spec": {"memory_mib": 4096}}, headers=bearer(token)),
        client.post(f"{url}/stop", headers=bearer(token)),
    )
    return [answer.status_code for answer in answers]


@pytest.mark.parametrize("rounds", [6])
async def test_a_spec_change_racing_a_stop_ends_stopped_with_the_new_spec(
    service: tuple[httpx.AsyncClient, World], rounds: int
) -> None:
    client, servers = service
    _, token = await create_tenant(client, "acme")
    for round_ in range(rounds):
        instance_id = await _running(client, token, f"race-{round_}")
        assert await _race(client, token, instance_id) == [200, 202]
        body = await wait_phase(client, instance_id, "stopped", headers=bearer(token))
        assert body["desired_state"] == "stopped"
        assert body["generation"] == 3  # both requests: a generation each
        assert body["spec"]["memory_mib"] == 4096
        assert not servers.servers[instance_id].alive
        started = await client.post(f"/v1/instances/{instance_id}/start", headers=bearer(token))
        assert started.status_code == 202
        await wait_phase(client, instance_id, "running", headers=bearer(token))
        assert servers.servers[instance_id].spec.memory_mib == 4096  # applied at next start
