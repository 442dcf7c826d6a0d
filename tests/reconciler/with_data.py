"""A running instance whose data directory holds a file naming it (for the tests
whose runtime keeps real data directories, ``DataFakeRuntime``)."""

from __future__ import annotations

import httpx

from chroma_orch.reconciler.loop import Reconciler
from tests.helpers import bearer, converge
from tests.reconciler.doubles import DataFakeRuntime


async def running_with_data(
    client: httpx.AsyncClient,
    token: str,
    name: str,
    runtime: DataFakeRuntime,
    reconciler: Reconciler,
) -> str:
    """A running instance whose data directory holds a file naming it."""
    created = await client.post("/v1/instances", json={"name": name}, headers=bearer(token))
    assert created.status_code == 202, created.text
    instance_id: str = created.json()["instance"]["id"]
    await converge(reconciler)
    runtime.data_path(instance_id).mkdir(exist_ok=True)
    (runtime.data_path(instance_id) / "chroma.sqlite3").write_text(f"data of {name}")
    return instance_id


async def ask_restore(
    client: httpx.AsyncClient, token: str, instance_id: str, snapshot_id: str
) -> httpx.Response:
    """``POST /v1/instances/{id}/restore`` of ``snapshot_id``, as the tenant."""
    return await client.post(
        f"/v1/instances/{instance_id}/restore",
        json={"snapshot_id": snapshot_id},
        headers=bearer(token),
    )


def data_of(runtime: DataFakeRuntime, instance_id: str) -> str | None:
    """What the instance's data file says, or None without one."""
    path = runtime.data_path(instance_id) / "chroma.sqlite3"
    return path.read_text() if path.exists() else None
