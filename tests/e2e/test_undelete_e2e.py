"""Delete, then undelete, through the real service with real Chroma servers: the
data comes back, checked with a real ``chromadb`` client (a query, not only a count)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.service import Service, chroma_processes, running_instance, running_service
from tests.e2e.test_snapshots_e2e import _add, _contents
from tests.helpers import wait_for, wait_phase


@pytest.fixture
async def scheduling_service(database_url: str, tmp_path: Path) -> AsyncIterator[Service]:
    """The real service, its snapshot scheduler passing every half second."""
    async with running_service(
        database_url, tmp_path / "data", CHROMA_ORCH_SNAPSHOTS__SCHEDULE_INTERVAL="0.5"
    ) as service:
        yield service


async def _deleted(http: httpx.AsyncClient, instance_id: str) -> dict[str, Any]:
    """The instance once its delete is done, as the list of deleted instances shows it."""

    async def probe() -> dict[str, Any] | None:
        listed = (await http.get("/v1/instances", params={"deleted": "true"})).json()
        return next((item for item in listed["items"] if item["id"] == instance_id), None)

    found: dict[str, Any] = await wait_for(probe, timeout=60)
    return found


async def test_delete_then_undelete_brings_the_data_back(service: Service) -> None:
    token, instance_id = await running_instance(service)
    base = f"{service.url}/i/{instance_id}"
    await asyncio.to_thread(_add, base, token, ["a", "b"])
    async with service.client(token) as http:
        deleted = await http.delete(f"/v1/instances/{instance_id}")
        assert deleted.status_code == 202, deleted.text
        await _deleted(http, instance_id)
        assert (await http.get(f"/v1/instances/{instance_id}")).status_code == 404
        assert instance_id not in chroma_processes(service.data_dir)
        snapshots = (await http.get(f"/v1/instances/{instance_id}/snapshots")).json()["items"]
        assert [(s["kind"], s["phase"]) for s in snapshots] == [("pre_delete", "ready")]

        undeleted = await http.post(f"/v1/instances/{instance_id}/undelete")
        assert undeleted.status_code == 202, undeleted.text
        generation = undeleted.json()["instance"]["generation"]
        running = await wait_phase(http, instance_id, "running", timeout=60)
        assert running["generation"] == generation
        assert await asyncio.to_thread(_contents, base, token) == ({"a", "b"}, "b")


async def test_a_purged_instance_cannot_be_undeleted(service: Service) -> None:
    token, instance_id = await running_instance(service)
    async with service.client(token) as http:
        purged = await http.delete(f"/v1/instances/{instance_id}", params={"purge": "true"})
        assert purged.status_code == 202, purged.text
        await _deleted(http, instance_id)
        snapshots = (await http.get(f"/v1/instances/{instance_id}/snapshots")).json()["items"]
        assert snapshots == []
        refused = await http.post(f"/v1/instances/{instance_id}/undelete")
        assert refused.status_code == 409
        assert refused.headers["content-type"].startswith("application/problem+json")


async def test_the_services_scheduler_takes_a_scheduled_snapshot(
    scheduling_service: Service,
) -> None:
    service = scheduling_service
    token, instance_id = await running_instance(service)
    base = f"{service.url}/i/{instance_id}"
    await asyncio.to_thread(_add, base, token, ["a"])
    async with service.client(token) as http:
        schedule = f"/v1/instances/{instance_id}/snapshot-schedule"
        put = await http.put(schedule, json={"every": 3600, "keep": 1})
        assert put.status_code == 200, put.text

        async def scheduled() -> list[dict[str, Any]] | None:
            listed = (await http.get(f"/v1/instances/{instance_id}/snapshots")).json()["items"]
            ready = [s for s in listed if s["kind"] == "scheduled" and s["phase"] == "ready"]
            return ready or None

        taken = await wait_for(scheduled, timeout=60)
        assert len(taken) == 1
        assert (await http.get(schedule)).json()["next_snapshot_at"] is not None
        await wait_phase(http, instance_id, "running", timeout=60)  # back after the pause
        assert (await asyncio.to_thread(_contents, base, token))[0] == {"a"}
