"""A snapshot requested while the instance starts: it is taken (a server starting is
quiesced like a running one; a fresh instance's empty data is packed as it is) and
holds exactly the data written before it."""

from __future__ import annotations

import asyncio

import chromadb
from chromadb.config import Settings

from tests.e2e.service import Service, running_instance
from tests.e2e.snapshot_faults import add, contents, request_snapshot, restore, settled
from tests.helpers import bearer, wait_for, wait_phase


def _collections(base: str, token: str) -> list[str]:
    client = chromadb.HttpClient(
        host=base, headers=bearer(token), settings=Settings(anonymized_telemetry=False)
    )
    return [collection.name for collection in client.list_collections()]


async def test_snapshot_of_a_starting_instance(service: Service) -> None:
    token, instance_id = await running_instance(service)
    await add(service, instance_id, token, ["a", "b"])
    async with service.client(token) as http:
        await http.post(f"/v1/instances/{instance_id}/stop")
        await wait_phase(http, instance_id, "stopped")
        await http.post(f"/v1/instances/{instance_id}/start")

        async def starting() -> bool:
            body = (await http.get(f"/v1/instances/{instance_id}")).json()
            return bool(body["phase"] == "starting")

        await wait_for(starting, timeout=30, interval=0.005)
        snapshot = await settled(http, await request_snapshot(http, instance_id))
        assert snapshot["phase"] == "ready", snapshot
        await wait_phase(http, instance_id, "running", timeout=60)
        assert await contents(service, instance_id, token) == ({"a", "b"}, "b")
        await add(service, instance_id, token, ["c"])
        await restore(http, instance_id, snapshot["id"])
        await wait_phase(http, instance_id, "running", timeout=60)
    assert await contents(service, instance_id, token) == ({"a", "b"}, "b")


async def test_snapshot_of_a_new_instance_while_it_first_starts(service: Service) -> None:
    token, _ = await running_instance(service)
    async with service.client(token) as http:
        created = await http.post("/v1/instances", json={"name": "fresh"})
        instance_id = created.json()["instance"]["id"]
        snapshot = await settled(http, await request_snapshot(http, instance_id))
        assert snapshot["phase"] == "ready", snapshot
        await wait_phase(http, instance_id, "running", timeout=60)
        await add(service, instance_id, token, ["a"])
        await restore(http, instance_id, snapshot["id"])
        await wait_phase(http, instance_id, "running", timeout=60)
    base = f"{service.url}/i/{instance_id}"
    assert await asyncio.to_thread(_collections, base, token) == []
