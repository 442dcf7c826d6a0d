"""A restore whose ``pre_restore`` snapshot fails does not replace the data, whatever
the instance was asked meanwhile (a stop, a restart: each a generation of its own).

The reconciler asks whether the snapshot of the data a load would replace failed, and
only one taken since the load was asked counts. It asked about the instance's current
generation: once a stop had followed the restore, no ``pre_restore`` was "since", the
failed one went unseen, and the data was swapped with no copy of it anywhere. Against
real PostgreSQL, real data directories and the app's store, whose puts fail."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx

from chroma_orch.context import AppContext
from chroma_orch.reconciler.loop import Reconciler
from chroma_orch.settings import Settings
from chroma_orch.snapshots.store import SnapshotStore, StoredObject, StoreUnavailableError
from tests.helpers import bearer, converge, create_tenant
from tests.reconciler.doubles import DataFakeRuntime
from tests.reconciler.with_data import ask_restore, data_of, running_with_data


class NoPutStore:
    """The app's store, whose puts fail as a full disk's or a read-only bucket's do;
    reads work."""

    def __init__(self, inner: SnapshotStore) -> None:
        self.inner = inner
        self.name = inner.name

    async def put(self, key: str, chunks: AsyncIterator[bytes]) -> StoredObject:
        raise StoreUnavailableError("no space left in the store")

    def get(self, key: str) -> AsyncIterator[bytes]:
        return self.inner.get(key)

    async def delete(self, key: str) -> None:
        await self.inner.delete(key)

    async def exists(self, key: str) -> bool:
        return await self.inner.exists(key)


def _one_try(settings: Settings) -> Settings:
    snapshots = settings.snapshots.model_copy(update={"attempts": 1})
    return settings.model_copy(update={"snapshots": snapshots})


async def test_a_stop_after_a_restore_does_not_hide_its_failed_pre_restore(
    client: httpx.AsyncClient,
    ctx: AppContext,
    data_runtime: DataFakeRuntime,
    api_settings: Settings,
) -> None:
    _, token = await create_tenant(client, "acme")
    healthy = Reconciler(ctx.sessions, data_runtime, api_settings, store=ctx.store)
    instance_id = await running_with_data(client, token, "main", data_runtime, healthy)
    taken = await client.post(f"/v1/instances/{instance_id}/snapshots", headers=bearer(token))
    await converge(healthy)
    (data_runtime.data_path(instance_id) / "chroma.sqlite3").write_text("written since")

    restored = await ask_restore(client, token, instance_id, taken.json()["id"])
    assert restored.status_code == 202, restored.text
    stopped = await client.post(f"/v1/instances/{instance_id}/stop", headers=bearer(token))
    assert stopped.status_code == 202, stopped.text  # a generation after the restore's
    no_puts = Reconciler(
        ctx.sessions, data_runtime, _one_try(api_settings), store=NoPutStore(ctx.store)
    )
    await converge(no_puts)

    assert data_of(data_runtime, instance_id) == "written since"  # no copy of it was kept
    body = (await client.get(f"/v1/instances/{instance_id}", headers=bearer(token))).json()
    assert body["failure"]["reason"] == "PreRestoreSnapshotFailed", body
