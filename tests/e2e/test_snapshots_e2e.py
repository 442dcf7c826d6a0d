"""Snapshots, restores and clones of real Chroma data, through the real service and
its data plane, checked with a real ``chromadb`` client (queries, not only counts)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import chromadb
import httpx
from chromadb.config import Settings

from tests.e2e.service import Service, chroma_processes, running_instance
from tests.helpers import bearer, wait_for, wait_phase

VECTORS: dict[str, Sequence[float]] = {
    "a": [1.0, 0.0, 0.0],
    "b": [0.0, 1.0, 0.0],
    "c": [0.0, 0.0, 1.0],
}


def _collection(base: str, token: str) -> Any:
    client = chromadb.HttpClient(
        host=base, headers=bearer(token), settings=Settings(anonymized_telemetry=False)
    )
    return client.get_or_create_collection("docs")


def _add(base: str, token: str, ids: Sequence[str]) -> None:
    _collection(base, token).add(ids=list(ids), embeddings=[VECTORS[i] for i in ids])


def _contents(base: str, token: str) -> tuple[set[str], str]:
    """The ids stored, and the nearest neighbour of a query close to ``b``."""
    docs = _collection(base, token)
    stored = set(docs.get()["ids"])
    nearest: str = docs.query(query_embeddings=[[0.1, 0.9, 0.0]], n_results=1)["ids"][0][0]
    return stored, nearest


async def _snapshot(http: httpx.AsyncClient, instance_id: str) -> dict[str, Any]:
    """Take a snapshot of the instance and wait until it is ready."""
    created = await http.post(f"/v1/instances/{instance_id}/snapshots")
    assert created.status_code == 202, created.text
    assert created.json()["phase"] == "pending"
    return await _ready(http, created.json()["id"])


async def _ready(http: httpx.AsyncClient, snapshot_id: str) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        body: dict[str, Any] = (await http.get(f"/v1/snapshots/{snapshot_id}")).json()
        assert body["phase"] != "failed", body
        return body if body["phase"] == "ready" else None

    ready: dict[str, Any] = await wait_for(probe, timeout=60)
    return ready


async def test_snapshot_restore_undo_and_clone(service: Service) -> None:
    token, instance_id = await running_instance(service)
    base = f"{service.url}/i/{instance_id}"
    await asyncio.to_thread(_add, base, token, ["a", "b"])
    async with service.client(token) as http:
        snapshot = await _snapshot(http, instance_id)
        assert snapshot["kind"] == "manual"
        assert snapshot["size_bytes"] > 0
        assert len(snapshot["checksum"]) == 64
        assert snapshot["chroma_version"].startswith("1.")
        # the server was paused for the copy and runs again, with every write
        await wait_phase(http, instance_id, "running")
        assert await asyncio.to_thread(_contents, base, token) == ({"a", "b"}, "b")
        await asyncio.to_thread(_add, base, token, ["c"])

        restored = await http.post(
            f"/v1/instances/{instance_id}/restore", json={"snapshot_id": snapshot["id"]}
        )
        assert restored.status_code == 202, restored.text
        assert restored.json()["intent"]["action"] == "restore"
        generation = restored.json()["instance"]["generation"]
        running = await wait_phase(http, instance_id, "running", timeout=60)
        assert running["generation"] == generation
        assert await asyncio.to_thread(_contents, base, token) == ({"a", "b"}, "b")

        listed = (await http.get(f"/v1/instances/{instance_id}/snapshots")).json()["items"]
        undo = next(s for s in listed if s["kind"] == "pre_restore")
        assert undo["phase"] == "ready"
        again = await http.post(
            f"/v1/instances/{instance_id}/restore", json={"snapshot_id": undo["id"]}
        )
        assert again.status_code == 202, again.text
        await wait_phase(http, instance_id, "running", timeout=60)
        assert await asyncio.to_thread(_contents, base, token) == ({"a", "b", "c"}, "b")

        clone = await http.post(
            "/v1/instances", json={"name": "copy", "from_snapshot": snapshot["id"]}
        )
        assert clone.status_code == 202, clone.text
        clone_id = clone.json()["instance"]["id"]
        await wait_phase(http, clone_id, "running", timeout=60)
        clone_base = f"{service.url}/i/{clone_id}"
        assert await asyncio.to_thread(_contents, clone_base, token) == ({"a", "b"}, "b")
        # the clone's data is its own
        await asyncio.to_thread(_add, clone_base, token, ["c"])
        assert (await asyncio.to_thread(_contents, base, token))[0] == {"a", "b", "c"}


async def test_stopped_instance_is_snapshotted_without_starting(service: Service) -> None:
    token, instance_id = await running_instance(service)
    base = f"{service.url}/i/{instance_id}"
    await asyncio.to_thread(_add, base, token, ["a"])
    async with service.client(token) as http:
        await http.post(f"/v1/instances/{instance_id}/stop")
        await wait_phase(http, instance_id, "stopped")
        before = (await http.get(f"/v1/instances/{instance_id}")).json()
        snapshot = await _snapshot(http, instance_id)
        after = (await http.get(f"/v1/instances/{instance_id}")).json()
        assert after["phase"] == "stopped"
        assert after["generation"] == before["generation"]
        assert instance_id not in chroma_processes(service.data_dir)
        assert snapshot["size_bytes"] > 0


def _archive_names(path: Path) -> list[str]:
    return sorted(p.name for p in path.rglob("*.tar.zst"))


async def test_deleting_a_snapshot_removes_its_archive(service: Service) -> None:
    token, instance_id = await running_instance(service)
    async with service.client(token) as http:
        snapshot = await _snapshot(http, instance_id)
        store = service.data_dir / "snapshots"
        (name,) = _archive_names(store)
        assert name.startswith(f"{snapshot['id']}."), name
        deleted = await http.delete(f"/v1/snapshots/{snapshot['id']}")
        assert deleted.status_code == 202
        assert deleted.json()["phase"] == "deleting"

        async def gone() -> bool:
            response = await http.get(f"/v1/snapshots/{snapshot['id']}")
            return response.status_code == 404

        await wait_for(gone, timeout=30)
        assert _archive_names(store) == []
