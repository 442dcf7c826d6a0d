"""A purge while a snapshot is being taken: what the purge marked ``deleting`` stays
so. A capture that finishes under it records where its archive went, and the
snapshot's delete removes that archive, then the row. Before, the capture's last
write set the snapshot ``ready`` again: a purged instance kept a ready ``pre_delete``
or manual snapshot, its archive and an undelete that could load it, until retention.

Against real PostgreSQL, real data directories and the app's snapshot store, held at
the start of the capture's ``put`` while the purge is sent."""

from __future__ import annotations

import asyncio
import uuid

import httpx

from chroma_orch.context import AppContext
from chroma_orch.db.models import Snapshot
from chroma_orch.reconciler.loop import Reconciler
from chroma_orch.settings import Settings
from tests.helpers import bearer, converge
from tests.reconciler.doubles import DataFakeRuntime
from tests.reconciler.with_data import HeldStore, stopped_with_snapshot_asked


async def _purge(client: httpx.AsyncClient, token: str, instance_id: str) -> None:
    answer = await client.delete(
        f"/v1/instances/{instance_id}",
        params={"keep_data": "false", "purge": "true"},
        headers=bearer(token),
    )
    assert answer.status_code == 202, answer.text


async def _row(ctx: AppContext, snapshot_id: str) -> Snapshot | None:
    async with ctx.sessions() as session:
        return await session.get(Snapshot, uuid.UUID(snapshot_id))


async def test_a_purge_during_a_capture_leaves_no_snapshot_and_no_archive(
    client: httpx.AsyncClient,
    ctx: AppContext,
    data_runtime: DataFakeRuntime,
    api_settings: Settings,
) -> None:
    held = HeldStore(ctx.store)
    reconciler = Reconciler(ctx.sessions, data_runtime, api_settings, store=held)
    held.go.set()  # the set-up's passes store nothing
    token, tenant_id, instance_id, snapshot_id = await stopped_with_snapshot_asked(
        client, data_runtime, reconciler
    )
    held.go.clear()
    capturing = asyncio.create_task(converge(reconciler))
    await asyncio.wait_for(held.entered.wait(), 10)
    await _purge(client, token, instance_id)
    row = await _row(ctx, snapshot_id)
    assert row is not None
    assert row.phase == "deleting"  # what the purge wrote
    assert row.location is not None  # the key the held put stores under

    held.go.set()
    await capturing
    await converge(reconciler)

    assert await _row(ctx, snapshot_id) is None
    assert not await ctx.store.exists(row.location), "the archive the capture stored is left"
    seen = await client.get(f"/v1/snapshots/{snapshot_id}", headers=bearer(token))
    assert seen.status_code == 404, seen.text
    undelete = await client.post(f"/v1/instances/{instance_id}/undelete", headers=bearer(token))
    assert undelete.status_code == 409, undelete.text


async def test_an_archive_stored_by_a_pass_that_died_goes_with_its_snapshot(
    client: httpx.AsyncClient,
    ctx: AppContext,
    data_runtime: DataFakeRuntime,
    api_settings: Settings,
) -> None:
    """A pass that stored the archive and died before it could record it ready left
    the archive under the key it recorded first; deleting the snapshot removes it."""
    dying = HeldStore(ctx.store, fail_after_put=True)
    dying.go.set()
    setup = Reconciler(ctx.sessions, data_runtime, api_settings, store=ctx.store)
    token, tenant_id, instance_id, snapshot_id = await stopped_with_snapshot_asked(
        client, data_runtime, setup
    )
    reconciler = Reconciler(ctx.sessions, data_runtime, api_settings, store=dying)
    await reconciler.run_once()
    await reconciler.drain()
    row = await _row(ctx, snapshot_id)
    assert row is not None
    assert row.phase == "running"
    key = row.location  # recorded before the put
    assert key is not None
    assert key.startswith(f"{tenant_id}/{instance_id}/{snapshot_id}.")
    assert await ctx.store.exists(key)

    await _purge(client, token, instance_id)
    await converge(setup)

    assert await _row(ctx, snapshot_id) is None
    assert not await ctx.store.exists(key), "the archive of the pass that died is left"
