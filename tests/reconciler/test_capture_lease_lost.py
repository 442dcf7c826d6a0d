"""A replica that loses an instance's lease while it stores a snapshot's archive
cannot replace the archive the replica that took the lease over recorded.

Each try of a capture stores under a key of its own, recorded on the snapshot (a
write fenced on the lease) before the put; the archive the snapshot names is the one
its checksum was taken of. Before, every try stored under the snapshot's one key: the
late put of the replica that lost the lease replaced the recorded archive with other
bytes, and every restore of the snapshot failed its checksum.

Against real PostgreSQL, real data directories and the app's snapshot store; the
first replica's put is held at its start while the lease moves."""

from __future__ import annotations

import asyncio
import hashlib
import uuid

import httpx

from chroma_orch.context import AppContext
from chroma_orch.db.models import Snapshot
from chroma_orch.reconciler.loop import Reconciler
from chroma_orch.settings import Settings
from tests.helpers import bearer, converge
from tests.reconciler.doubles import DataFakeRuntime
from tests.reconciler.with_data import (
    HeldStore,
    ask_restore,
    data_of,
    lease_lapses,
    replica,
    stopped_with_snapshot_asked,
)


async def test_a_put_after_the_lease_was_lost_leaves_the_recorded_archive(
    client: httpx.AsyncClient,
    ctx: AppContext,
    data_runtime: DataFakeRuntime,
    api_settings: Settings,
) -> None:
    setup = Reconciler(ctx.sessions, data_runtime, api_settings, store=ctx.store)
    token, _, instance_id, snapshot_id = await stopped_with_snapshot_asked(
        client, data_runtime, setup
    )

    held = HeldStore(ctx.store)
    first = Reconciler(ctx.sessions, data_runtime, replica(api_settings, "a"), store=held)
    first_pass = asyncio.create_task(first.run_once())
    await asyncio.wait_for(held.entered.wait(), 10)
    await lease_lapses(ctx, instance_id)  # another replica claims it
    second = Reconciler(ctx.sessions, data_runtime, replica(api_settings, "b"), store=ctx.store)
    await converge(second)
    seen = await client.get(f"/v1/snapshots/{snapshot_id}", headers=bearer(token))
    assert seen.json()["phase"] == "ready", seen.text

    (data_runtime.data_path(instance_id) / "chroma.sqlite3").write_text("changed since")
    held.go.set()  # the first replica's put goes on, of other bytes
    await first_pass
    await first.drain()

    async with ctx.sessions() as session:
        row = await session.get(Snapshot, uuid.UUID(snapshot_id))
    assert row is not None
    assert row.phase == "ready"
    assert row.location is not None
    stored = hashlib.sha256()
    async for chunk in ctx.store.get(row.location):
        stored.update(chunk)
    assert stored.hexdigest() == row.checksum, "the recorded archive was replaced"

    restored = await ask_restore(client, token, instance_id, snapshot_id)
    assert restored.status_code == 202, restored.text
    await converge(second)
    assert data_of(data_runtime, instance_id) == "data of main"
