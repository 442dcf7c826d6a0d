"""Helpers of the snapshot fault tests: the instance's data as a real ``chromadb``
client sees it, snapshots settled, archives planted in the store, and rows read
straight from PostgreSQL (what the API does not show, e.g. ``attempts``)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import text

from chroma_orch.db.session import create_engine
from tests.e2e.service import Service
from tests.e2e.test_snapshots_e2e import _add, _contents
from tests.helpers import wait_for, wait_phase


async def add(service: Service, instance_id: str, token: str, ids: Sequence[str]) -> None:
    await asyncio.to_thread(_add, f"{service.url}/i/{instance_id}", token, ids)


async def contents(service: Service, instance_id: str, token: str) -> tuple[set[str], str]:
    """The ids the instance holds and the nearest neighbour of a query near ``b``."""
    return await asyncio.to_thread(_contents, f"{service.url}/i/{instance_id}", token)


async def request_snapshot(http: httpx.AsyncClient, instance_id: str) -> str:
    created = await http.post(f"/v1/instances/{instance_id}/snapshots")
    assert created.status_code == 202, created.text
    snapshot_id: str = created.json()["id"]
    return snapshot_id


async def settled(http: httpx.AsyncClient, snapshot_id: str, timeout: float = 90) -> dict[str, Any]:
    """The snapshot once it is ``ready`` or ``failed``."""

    async def probe() -> dict[str, Any] | None:
        body: dict[str, Any] = (await http.get(f"/v1/snapshots/{snapshot_id}")).json()
        return body if body["phase"] in ("ready", "failed") else None

    done: dict[str, Any] = await wait_for(probe, timeout=timeout, interval=0.2)
    return done


async def restore_failed(http: httpx.AsyncClient, instance_id: str) -> dict[str, Any]:
    """The instance once a restore of it failed (phase ``failed``, converged).

    With the store down this takes ~30 s here: ``SNAPSHOTS__ATTEMPTS`` passes of the
    pre_restore snapshot, each the S3 client's five tries at a refused endpoint
    (5.5 s), with backoff between. (It took 70-100 s while each pass also waited for
    the archive's load to run all its own tries.)"""
    return await wait_phase(http, instance_id, "failed", timeout=120)


async def restore(http: httpx.AsyncClient, instance_id: str, snapshot_id: str) -> None:
    answer = await http.post(
        f"/v1/instances/{instance_id}/restore", json={"snapshot_id": snapshot_id}
    )
    assert answer.status_code == 202, answer.text


async def start_again(http: httpx.AsyncClient, instance_id: str) -> dict[str, Any]:
    answer = await http.post(f"/v1/instances/{instance_id}/start")
    assert answer.status_code == 202, answer.text
    return await wait_phase(http, instance_id, "running", timeout=90)


async def snapshot_row(database_url: str, snapshot_id: str) -> dict[str, Any]:
    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            row = await conn.execute(
                text("SELECT * FROM snapshots WHERE id = :id"), {"id": uuid.UUID(snapshot_id)}
            )
            return dict(row.mappings().one())
    finally:
        await engine.dispose()


def store_path(service: Service, snapshot: dict[str, Any]) -> Path:
    """The local store's file of a ready snapshot."""
    found = list((service.data_dir / "snapshots").rglob(f"{snapshot['id']}.*.tar.zst"))
    assert len(found) == 1, found
    return found[0]
