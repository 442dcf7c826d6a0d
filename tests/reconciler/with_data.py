"""Instances with data for the tests whose runtime keeps real data directories
(``DataFakeRuntime``): a running one whose data file names it, a stopped one with a
snapshot asked, a store whose puts can be held (``HeldStore``), and a second replica
taking an instance over from one whose lease lapsed."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import httpx
from sqlalchemy import func, text, update

from chroma_orch.context import AppContext
from chroma_orch.db.models import Instance
from chroma_orch.reconciler.loop import Reconciler
from chroma_orch.settings import Settings
from chroma_orch.snapshots.store import SnapshotStore, StoredObject
from tests.helpers import bearer, converge, create_tenant
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


async def deleted_long_ago(ctx: AppContext, instance_id: str) -> None:
    """The instance deleted 400 hours ago: past the default retention (168)."""
    async with ctx.engine.begin() as conn:
        await conn.execute(
            text("UPDATE instances SET phase_changed_at = now() - interval '400 hours' "
                 "WHERE id = :id"),
            {"id": uuid.UUID(instance_id)},
        )  # fmt: skip


async def deleted_keeping_its_data(
    client: httpx.AsyncClient,
    token: str,
    instance_id: str,
    runtime: DataFakeRuntime,
    kept_by: str,
    reconciler: Reconciler,
) -> None:
    """Delete the instance so that its data stays in place, and converge: asked
    (``keep_data``), or because its ``pre_delete`` snapshot fails (a symlink no
    archive takes)."""
    params = {}
    if kept_by == "keep_data":
        params = {"keep_data": "true"}
    else:
        (runtime.data_path(instance_id) / "link").symlink_to("chroma.sqlite3")
    deleted = await client.delete(
        f"/v1/instances/{instance_id}", params=params, headers=bearer(token)
    )
    assert deleted.status_code == 202, deleted.text
    await converge(reconciler)


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


class HeldStore:
    """The app's store, each ``put`` held at its start until ``go`` is set
    (``entered`` says one is waiting); with ``fail_after_put``, a put stores the
    archive and then fails, as a pass that died before recording it."""

    def __init__(self, inner: SnapshotStore, *, fail_after_put: bool = False) -> None:
        self.inner = inner
        self.name = inner.name
        self.fail_after_put = fail_after_put
        self.entered = asyncio.Event()
        self.go = asyncio.Event()

    async def put(self, key: str, chunks: AsyncIterator[bytes]) -> StoredObject:
        self.entered.set()
        await self.go.wait()
        stored = await self.inner.put(key, chunks)
        if self.fail_after_put:
            raise RuntimeError("the pass died after the put")
        return stored

    def get(self, key: str) -> AsyncIterator[bytes]:
        return self.inner.get(key)

    async def delete(self, key: str) -> None:
        await self.inner.delete(key)

    async def exists(self, key: str) -> bool:
        return await self.inner.exists(key)


async def stopped_with_snapshot_asked(
    client: httpx.AsyncClient, runtime: DataFakeRuntime, reconciler: Reconciler
) -> tuple[str, str, str, str]:
    """(token, tenant id, instance id, id of a pending snapshot) of a stopped instance
    with data: its capture packs the data directory as it is."""
    return await with_snapshot_asked(client, runtime, reconciler, stopped=True)


async def with_snapshot_asked(
    client: httpx.AsyncClient,
    runtime: DataFakeRuntime,
    reconciler: Reconciler,
    *,
    stopped: bool,
) -> tuple[str, str, str, str]:
    """(token, tenant id, instance id, id of a pending snapshot) of an instance with
    data, ``stopped`` first or running."""
    tenant_id, token = await create_tenant(client, "acme")
    instance_id = await running_with_data(client, token, "main", runtime, reconciler)
    if stopped:
        answer = await client.post(f"/v1/instances/{instance_id}/stop", headers=bearer(token))
        assert answer.status_code == 202, answer.text
        await converge(reconciler)
    asked = await client.post(f"/v1/instances/{instance_id}/snapshots", headers=bearer(token))
    assert asked.status_code == 202, asked.text
    return token, tenant_id, instance_id, asked.json()["id"]


async def as_a_dead_pass_left_it(ctx: AppContext, instance_id: str, phase: str) -> None:
    """The row as a pass that died leaves it: ``phase``, no server recorded, no lease
    (expired and cleared), so the next claim takes it; its server is as it was."""
    async with ctx.engine.begin() as conn:
        await conn.execute(
            update(Instance)
            .where(Instance.id == uuid.UUID(instance_id))
            .values(
                phase=phase,
                handle=None,
                endpoint_host=None,
                endpoint_port=None,
                lease_owner=None,
                lease_expires_at=None,
                next_reconcile_at=func.now(),
            )
        )


def replica(settings: Settings, name: str) -> Settings:
    """``settings`` for a replica named ``name`` (its leases' owner)."""
    return settings.model_copy(
        update={"reconciler": settings.reconciler.model_copy(update={"replica_id": name})}
    )


async def lease_lapses(ctx: AppContext, instance_id: str) -> None:
    """The instance's lease lapses (its owner still works on it): the next claim, by
    any replica, takes it."""
    async with ctx.sessions() as session:
        await session.execute(
            update(Instance)
            .where(Instance.id == uuid.UUID(instance_id))
            .values(lease_owner=None, lease_expires_at=None, next_reconcile_at=func.now())
        )
        await session.commit()
