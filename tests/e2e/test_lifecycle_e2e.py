"""End to end: the service under uvicorn, real PostgreSQL, real Chroma servers."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import chromadb
import httpx

from tests.e2e.service import Service, chroma_processes, port_is_open
from tests.helpers import create_tenant, wait_for, wait_phase

EMBEDDINGS: list[Sequence[float]] = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
QUERY: list[Sequence[float]] = [[0.0, 0.9, 0.1]]


def _write_and_query(host: str, port: int) -> list[str]:
    client = chromadb.HttpClient(host=host, port=port)
    collection = client.get_or_create_collection("docs")
    collection.add(ids=["a", "b", "c"], embeddings=EMBEDDINGS, documents=["alpha", "beta", "gamma"])
    result = collection.query(query_embeddings=QUERY, n_results=1)
    ids: list[str] = result["ids"][0]
    return ids


def _count(host: str, port: int) -> int:
    count: int = chromadb.HttpClient(host=host, port=port).get_collection("docs").count()
    return count


async def _instance(http: httpx.AsyncClient, path: str) -> dict[str, Any]:
    body: dict[str, Any] = (await http.get(path)).json()
    return body


async def test_full_lifecycle_with_a_real_chroma_client(service: Service) -> None:
    async with service.client() as admin:
        _, token = await create_tenant(admin, "acme")
    async with service.client(token) as http:
        created = await http.post("/v1/instances", json={"name": "main"})
        instance_id = created.json()["instance"]["id"]
        running = await wait_phase(http, instance_id, "running")
        host, port = running["endpoint"]["host"], running["endpoint"]["port"]
        # the local runtime's start phases, each with its time, in order
        assert running["start_phase"] == "heartbeat_answered"
        phases = running["start_phases"]
        assert list(phases) == ["running", "listening", "heartbeat_answered"]
        assert list(phases.values()) == sorted(phases.values())
        assert await asyncio.to_thread(_write_and_query, host, port) == ["b"]
        assert len(chroma_processes(service.data_dir)[instance_id]) == 1

        await http.post(f"/v1/instances/{instance_id}/stop")
        stopped = await wait_phase(http, instance_id, "stopped")
        assert stopped["endpoint"] is None
        assert not port_is_open(host, port)
        assert instance_id not in chroma_processes(service.data_dir)

        await http.post(f"/v1/instances/{instance_id}/start")
        again = await wait_phase(http, instance_id, "running")
        new_host, new_port = again["endpoint"]["host"], again["endpoint"]["port"]
        assert await asyncio.to_thread(_count, new_host, new_port) == 3

        logs = await http.get(f"/v1/instances/{instance_id}/logs", params={"tail": 50})
        assert logs.status_code == 200
        assert isinstance(logs.json()["lines"], list)

        await http.delete(f"/v1/instances/{instance_id}")

        async def gone() -> bool:
            return (await http.get(f"/v1/instances/{instance_id}")).status_code == 404

        await wait_for(gone, timeout=30)
        assert not port_is_open(new_host, new_port)
        assert not (service.data_dir / "instances" / instance_id).exists()
        assert instance_id not in chroma_processes(service.data_dir)


async def test_seed_routes_end_to_end(service: Service) -> None:
    async with service.client() as http:
        launched = await http.post("/launch", json={"user_id": "alice"})
        assert launched.status_code == 202

        async def seed_running() -> dict[str, Any] | None:
            body = await _instance(http, "/status/alice")
            return body if body["status"] == "running" else None

        status = await wait_for(seed_running, timeout=30)
        assert status["port"] == status["endpoint"]["port"]
        assert await asyncio.to_thread(_write_and_query, "127.0.0.1", status["port"]) == ["b"]

        assert (await http.post("/stop/alice")).status_code == 202

        async def seed_stopped() -> bool:
            return bool((await _instance(http, "/status/alice"))["status"] == "stopped")

        await wait_for(seed_stopped, timeout=30)
        assert not port_is_open("127.0.0.1", status["port"])

        assert (await http.post("/launch", json={"user_id": "alice"})).status_code == 202
        relaunched = await wait_for(seed_running, timeout=30)
        assert await asyncio.to_thread(_count, "127.0.0.1", relaunched["port"]) == 3

        assert (await http.delete("/delete/alice")).status_code == 202

        async def seed_gone() -> bool:
            body = await _instance(http, f"/v1/instances/{relaunched['id']}")
            return body.get("code") == "not_found"

        await wait_for(seed_gone, timeout=30)
        assert (await http.get("/status/alice")).status_code == 404
        assert not chroma_processes(service.data_dir)


async def test_a_killed_server_is_noticed_and_restarted(service: Service) -> None:
    async with service.client() as admin:
        _, token = await create_tenant(admin, "acme")
    async with service.client(token) as http:
        created = await http.post("/v1/instances", json={"name": "main"})
        instance_id = created.json()["instance"]["id"]
        first = await wait_phase(http, instance_id, "running")
        (victim,) = chroma_processes(service.data_dir)[instance_id]
        victim.kill()
        killed_at = asyncio.get_running_loop().time()

        async def restarted() -> dict[str, Any] | None:
            body = await _instance(http, f"/v1/instances/{instance_id}")
            return body if body["restart_count"] == 1 and body["phase"] == "running" else None

        again = await wait_for(restarted, timeout=20, interval=0.02)
        assert asyncio.get_running_loop().time() - killed_at < 5
        assert again["endpoint"]["port"] == first["endpoint"]["port"]  # the port stays reserved
        (replacement,) = chroma_processes(service.data_dir)[instance_id]
        assert replacement.pid != victim.pid
        assert await asyncio.to_thread(_count_or_zero, "127.0.0.1", again["endpoint"]["port"]) == 0


def _count_or_zero(host: str, port: int) -> int:
    client = chromadb.HttpClient(host=host, port=port)
    return len(client.list_collections())
