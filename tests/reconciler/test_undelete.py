"""Delete with a pre_delete snapshot, undelete, purge, and the purge after retention,
against real PostgreSQL with a reconciler whose runtime keeps real data directories
(archives through the real directory store)."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select, text

from chroma_orch.context import AppContext
from chroma_orch.db.models import Event, Instance, Snapshot
from chroma_orch.db.retention import Retention
from chroma_orch.reconciler.loop import Reconciler
from chroma_orch.settings import RetentionSettings, Settings
from tests.helpers import bearer, converge, create_tenant, instance_row
from tests.reconciler.doubles import DataFakeRuntime, FakeRuntime
from tests.reconciler.with_data import (
    ask_restore,
    data_of,
    deleted_keeping_its_data,
    deleted_long_ago,
    running_with_data,
)

_PURGE = {"purge": "true"}


async def _snapshots(ctx: AppContext, instance_id: str) -> list[tuple[str, str]]:
    async with ctx.engine.connect() as conn:
        found = await conn.execute(
            select(Snapshot.kind, Snapshot.phase)
            .where(Snapshot.instance_id == uuid.UUID(instance_id))
            .order_by(Snapshot.created_at)
        )
        return [(kind, phase) for kind, phase in found]


def _archives(ctx: AppContext) -> list[Path]:
    return list(ctx.settings.snapshots.directory(ctx.settings.data_dir).rglob("*.tar.zst"))


async def _get(client: httpx.AsyncClient, token: str, instance_id: str) -> httpx.Response:
    return await client.get(f"/v1/instances/{instance_id}", headers=bearer(token))


@dataclass
class _LoadFailed:
    """An undelete whose load failed: its ``pre_delete`` snapshot's archive was moved
    away (to ``away``; ``archive`` is where it belongs)."""

    token: str
    instance_id: str
    snapshot_id: str
    archive: Path
    away: Path

    def bring_archive_back(self) -> None:
        self.away.rename(self.archive)


async def _undelete_that_cannot_load(
    client: httpx.AsyncClient, ctx: AppContext, runtime: DataFakeRuntime, reconciler: Reconciler
) -> _LoadFailed:
    """A running instance with data, deleted, its snapshot's archive moved out of
    reach, then undeleted: it ends ``failed``, with no data."""
    _, token = await create_tenant(client, "acme")
    instance_id = await running_with_data(client, token, "main", runtime, reconciler)
    await client.delete(f"/v1/instances/{instance_id}", headers=bearer(token))
    await converge(reconciler)
    listed = await client.get(f"/v1/instances/{instance_id}/snapshots", headers=bearer(token))
    (kept,) = listed.json()["items"]
    store = ctx.settings.snapshots.directory(ctx.settings.data_dir)
    (archive,) = store.rglob(f"{kept['id']}.*.tar.zst")
    away = archive.with_name("away")
    archive.rename(away)
    undeleted = await client.post(f"/v1/instances/{instance_id}/undelete", headers=bearer(token))
    assert undeleted.status_code == 202, undeleted.text
    await converge(reconciler)
    assert (await _get(client, token, instance_id)).json()["phase"] == "failed"
    return _LoadFailed(token, instance_id, kept["id"], archive, away)


async def _undeleted_with_its_data(
    client: httpx.AsyncClient,
    token: str,
    instance_id: str,
    runtime: DataFakeRuntime,
    reconciler: Reconciler,
) -> None:
    """Undelete the instance: it runs with the data it had when it was first deleted."""
    undeleted = await client.post(f"/v1/instances/{instance_id}/undelete", headers=bearer(token))
    assert undeleted.status_code == 202, undeleted.text
    await converge(reconciler)
    assert (await _get(client, token, instance_id)).json()["phase"] == "running"
    assert data_of(runtime, instance_id) == "data of main"


async def test_a_deleted_instance_is_undeleted_with_its_data(
    client: httpx.AsyncClient,
    ctx: AppContext,
    data_runtime: DataFakeRuntime,
    data_reconciler: Reconciler,
) -> None:
    _, token = await create_tenant(client, "acme")
    instance_id = await running_with_data(client, token, "main", data_runtime, data_reconciler)
    deleted = await client.delete(f"/v1/instances/{instance_id}", headers=bearer(token))
    assert deleted.status_code == 202, deleted.text
    generation = deleted.json()["instance"]["generation"]
    assert await _snapshots(ctx, instance_id) == [("pre_delete", "pending")]  # same transaction
    await converge(data_reconciler)
    assert await _snapshots(ctx, instance_id) == [("pre_delete", "ready")]
    assert not data_runtime.data_path(instance_id).exists()  # the runtime removed it
    assert (await _get(client, token, instance_id)).status_code == 404
    listed = await client.get("/v1/instances", params={"deleted": "true"}, headers=bearer(token))
    assert [item["id"] for item in listed.json()["items"]] == [instance_id]
    live = await client.get("/v1/instances", headers=bearer(token))
    assert live.json()["items"] == []

    undeleted = await client.post(f"/v1/instances/{instance_id}/undelete", headers=bearer(token))
    assert undeleted.status_code == 202, undeleted.text
    body = undeleted.json()
    assert body["instance"]["desired_state"] == "running"
    assert body["instance"]["generation"] == generation + 1
    assert body["intent"]["action"] == "undelete"
    await converge(data_reconciler)
    back = (await _get(client, token, instance_id)).json()
    assert (back["phase"], back["observed_generation"]) == ("running", generation + 1)
    data = data_runtime.data_path(instance_id) / "chroma.sqlite3"
    assert data.read_text() == "data of main"
    async with ctx.engine.connect() as conn:
        restore = await conn.scalar(
            select(Instance.restore_snapshot_id).where(Instance.id == uuid.UUID(instance_id))
        )
        types = set(await conn.scalars(select(Event.type)))
    assert restore is None
    assert {"instance.restored", "snapshot.created"} <= types


async def test_undelete_refusals_change_nothing(
    client: httpx.AsyncClient,
    ctx: AppContext,
    data_runtime: DataFakeRuntime,
    data_reconciler: Reconciler,
) -> None:
    _, token = await create_tenant(client, "acme")
    _, other = await create_tenant(client, "other")
    first = await running_with_data(client, token, "main", data_runtime, data_reconciler)
    purged = await running_with_data(client, token, "purged", data_runtime, data_reconciler)

    def undelete(instance_id: str, as_token: str = token) -> Any:
        return client.post(f"/v1/instances/{instance_id}/undelete", headers=bearer(as_token))

    assert (await undelete(first)).status_code == 409  # live
    await client.delete(f"/v1/instances/{first}", headers=bearer(token))
    assert (await undelete(first)).status_code == 409  # still being deleted
    both = await client.delete(
        f"/v1/instances/{purged}", params={**_PURGE, "keep_data": "true"}, headers=bearer(token)
    )
    assert both.status_code == 422
    assert both.headers["content-type"].startswith("application/problem+json")
    assert (await _get(client, token, purged)).json()["desired_state"] == "running"
    await client.delete(f"/v1/instances/{purged}", params=_PURGE, headers=bearer(token))
    await converge(data_reconciler)
    assert (await undelete(first, other)).status_code == 404
    assert (await undelete(str(uuid.uuid4()))).status_code == 404
    no_snapshot = await undelete(purged)
    assert no_snapshot.status_code == 409
    assert "pre_delete" in no_snapshot.json()["detail"]
    again = await client.post("/v1/instances", json={"name": "main"}, headers=bearer(token))
    assert again.status_code == 202
    taken = await undelete(first)
    assert taken.status_code == 409
    assert "main" in taken.json()["detail"]
    listed = await client.get("/v1/instances", params={"deleted": "true"}, headers=bearer(token))
    assert {item["phase"] for item in listed.json()["items"]} == {"deleted"}
    assert await _snapshots(ctx, first) == [("pre_delete", "ready")]


async def test_a_purge_removes_every_snapshot_and_its_archive(
    client: httpx.AsyncClient,
    ctx: AppContext,
    data_runtime: DataFakeRuntime,
    data_reconciler: Reconciler,
) -> None:
    _, token = await create_tenant(client, "acme")
    instance_id = await running_with_data(client, token, "main", data_runtime, data_reconciler)
    await client.post(f"/v1/instances/{instance_id}/snapshots", headers=bearer(token))
    await converge(data_reconciler)
    assert len(_archives(ctx)) == 1
    await client.delete(f"/v1/instances/{instance_id}", params=_PURGE, headers=bearer(token))
    await converge(data_reconciler)
    assert await _snapshots(ctx, instance_id) == []
    assert _archives(ctx) == []
    assert not data_runtime.data_path(instance_id).exists()


async def test_purging_a_deleted_instance_later_removes_its_snapshots(
    client: httpx.AsyncClient,
    ctx: AppContext,
    data_runtime: DataFakeRuntime,
    data_reconciler: Reconciler,
) -> None:
    """A second pass on an instance already deleted carries out the purge."""
    _, token = await create_tenant(client, "acme")
    instance_id = await running_with_data(client, token, "main", data_runtime, data_reconciler)
    await client.delete(f"/v1/instances/{instance_id}", headers=bearer(token))
    await converge(data_reconciler)
    assert len(_archives(ctx)) == 1
    again = await client.delete(
        f"/v1/instances/{instance_id}", params=_PURGE, headers=bearer(token)
    )
    assert again.status_code == 202, again.text
    await converge(data_reconciler)
    assert await _snapshots(ctx, instance_id) == []
    assert _archives(ctx) == []
    undelete = await client.post(f"/v1/instances/{instance_id}/undelete", headers=bearer(token))
    assert undelete.status_code == 409


async def test_retention_removes_the_archives_before_the_instance(
    client: httpx.AsyncClient,
    ctx: AppContext,
    data_runtime: DataFakeRuntime,
    data_reconciler: Reconciler,
) -> None:
    _, token = await create_tenant(client, "acme")
    old = await running_with_data(client, token, "old", data_runtime, data_reconciler)
    recent = await running_with_data(client, token, "recent", data_runtime, data_reconciler)
    await client.post(f"/v1/instances/{old}/snapshots", headers=bearer(token))
    for instance_id in (old, recent):
        await client.delete(f"/v1/instances/{instance_id}", headers=bearer(token))
    await converge(data_reconciler)
    assert len(_archives(ctx)) == 3
    await deleted_long_ago(ctx, old)
    retention = Retention(ctx.sessions, RetentionSettings(batch=1), 168)
    first = await retention.run_once()
    assert first["snapshots"] == 2
    assert first["instances"] == 0  # its archives first
    assert {phase for _, phase in await _snapshots(ctx, old)} == {"deleting"}
    await converge(data_reconciler)
    assert await _snapshots(ctx, old) == []
    assert len(_archives(ctx)) == 1  # recent's pre_delete stays, restorable
    assert (await retention.run_once())["instances"] == 1
    undelete = await client.post(f"/v1/instances/{old}/undelete", headers=bearer(token))
    assert undelete.status_code == 404
    assert await _snapshots(ctx, recent) == [("pre_delete", "ready")]


async def test_a_runtime_that_cannot_snapshot_still_removes_the_data(
    client: httpx.AsyncClient, ctx: AppContext, runtime: FakeRuntime, api_settings: Settings
) -> None:
    """Its pre_delete snapshot fails Unsupported: no undelete, and the delete removes
    the data as before (keeping it would leave every deleted instance's data behind).
    A failed snapshot where the runtime can snapshot keeps it (see below)."""
    reconciler = Reconciler(ctx.sessions, runtime, api_settings, store=ctx.store)
    _, token = await create_tenant(client, "acme")
    created = await client.post("/v1/instances", json={"name": "main"}, headers=bearer(token))
    instance_id = created.json()["instance"]["id"]
    await converge(reconciler)
    await client.delete(f"/v1/instances/{instance_id}", headers=bearer(token))
    await converge(reconciler)
    assert await _snapshots(ctx, instance_id) == [("pre_delete", "failed")]
    assert runtime.deleted == [instance_id]
    assert runtime.kept == []


async def test_a_failed_pre_delete_snapshot_keeps_the_data(
    client: httpx.AsyncClient,
    ctx: AppContext,
    data_runtime: DataFakeRuntime,
    data_reconciler: Reconciler,
) -> None:
    _, token = await create_tenant(client, "acme")
    instance_id = await running_with_data(client, token, "main", data_runtime, data_reconciler)
    # a symlink: no archive takes one (UnsafeArchiveError), so the snapshot fails
    (data_runtime.data_path(instance_id) / "link").symlink_to("chroma.sqlite3")
    await client.delete(f"/v1/instances/{instance_id}", headers=bearer(token))
    await converge(data_reconciler)
    assert await _snapshots(ctx, instance_id) == [("pre_delete", "failed")]
    assert data_runtime.deleted[-1] == instance_id
    assert data_runtime.kept == data_runtime.deleted  # every delete kept the data
    assert (data_runtime.data_path(instance_id) / "chroma.sqlite3").exists()


@pytest.mark.parametrize("failed_snapshot", ["kept", "deleted"])
async def test_an_undelete_after_a_failed_pre_delete_starts_on_the_data_kept(
    client: httpx.AsyncClient,
    ctx: AppContext,
    data_runtime: DataFakeRuntime,
    data_reconciler: Reconciler,
    failed_snapshot: str,
) -> None:
    """Deleted and undeleted once (a ready pre_delete), written to, then deleted
    again with a pre_delete that fails: the delete keeps the data in place, and the
    undelete brings the instance back on it, also once the tenant deleted the failed
    snapshot. Before, it loaded the older ready snapshot over the newer data kept,
    with no copy of that."""
    _, token = await create_tenant(client, "acme")
    instance_id = await running_with_data(client, token, "main", data_runtime, data_reconciler)
    await client.delete(f"/v1/instances/{instance_id}", headers=bearer(token))
    await converge(data_reconciler)
    await _undeleted_with_its_data(client, token, instance_id, data_runtime, data_reconciler)
    (data_runtime.data_path(instance_id) / "chroma.sqlite3").write_text("written since")
    (data_runtime.data_path(instance_id) / "link").symlink_to("chroma.sqlite3")  # no archive
    await client.delete(f"/v1/instances/{instance_id}", headers=bearer(token))
    await converge(data_reconciler)
    kinds = await _snapshots(ctx, instance_id)
    assert kinds == [("pre_delete", "ready"), ("pre_delete", "failed")], kinds
    if failed_snapshot == "deleted":
        listed = await client.get(f"/v1/instances/{instance_id}/snapshots", headers=bearer(token))
        (failed,) = [item for item in listed.json()["items"] if item["phase"] == "failed"]
        gone = await client.delete(f"/v1/snapshots/{failed['id']}", headers=bearer(token))
        assert gone.status_code == 202, gone.text
        await converge(data_reconciler)
        assert await _snapshots(ctx, instance_id) == [("pre_delete", "ready")]

    undeleted = await client.post(f"/v1/instances/{instance_id}/undelete", headers=bearer(token))
    assert undeleted.status_code == 202, undeleted.text
    await converge(data_reconciler)
    assert (await _get(client, token, instance_id)).json()["phase"] == "running"
    assert data_of(data_runtime, instance_id) == "written since"


async def test_an_earlier_deletes_failed_pre_delete_does_not_keep_a_later_ones_data(
    client: httpx.AsyncClient,
    ctx: AppContext,
    data_runtime: DataFakeRuntime,
    data_reconciler: Reconciler,
) -> None:
    """The first delete's pre_delete failed (the data kept, then undeleted); the second
    one's is ready, and the data goes. The tenant deletes that ready snapshot: the
    pass that follows does not take the first delete's failed one for this delete's
    (before, it recorded data kept where none was, and an undelete started the
    instance empty instead of answering 409)."""
    _, token = await create_tenant(client, "acme")
    instance_id = await running_with_data(client, token, "main", data_runtime, data_reconciler)
    await deleted_keeping_its_data(
        client, token, instance_id, data_runtime, "failed_pre_delete", data_reconciler
    )
    undeleted = await client.post(f"/v1/instances/{instance_id}/undelete", headers=bearer(token))
    assert undeleted.status_code == 202, undeleted.text
    await converge(data_reconciler)
    (data_runtime.data_path(instance_id) / "link").unlink()
    deleted = await client.delete(f"/v1/instances/{instance_id}", headers=bearer(token))
    assert deleted.status_code == 202, deleted.text
    await converge(data_reconciler)
    assert await _snapshots(ctx, instance_id) == [("pre_delete", "failed"), ("pre_delete", "ready")]
    assert not data_runtime.data_path(instance_id).exists()

    listed = await client.get(f"/v1/instances/{instance_id}/snapshots", headers=bearer(token))
    (ready,) = [item for item in listed.json()["items"] if item["phase"] == "ready"]
    gone = await client.delete(f"/v1/snapshots/{ready['id']}", headers=bearer(token))
    assert gone.status_code == 202, gone.text
    await converge(data_reconciler)
    instance = await instance_row(ctx, instance_id)
    assert instance is not None
    assert (instance.keep_data, instance.data_kept_for_undelete) == (False, False)
    undelete = await client.post(f"/v1/instances/{instance_id}/undelete", headers=bearer(token))
    assert undelete.status_code == 409, undelete.text


@pytest.mark.parametrize("kept_by", ["keep_data", "failed_pre_delete"])
async def test_purging_a_deleted_instance_removes_the_data_its_delete_kept(
    client: httpx.AsyncClient,
    ctx: AppContext,
    data_runtime: DataFakeRuntime,
    data_reconciler: Reconciler,
    kept_by: str,
) -> None:
    """Before, a purge of an instance already deleted was a repeat: its snapshots
    went, but the data directory its delete had kept stayed, with nothing left to
    undelete it or remove it."""
    _, token = await create_tenant(client, "acme")
    instance_id = await running_with_data(client, token, "main", data_runtime, data_reconciler)
    await deleted_keeping_its_data(
        client, token, instance_id, data_runtime, kept_by, data_reconciler
    )
    assert data_of(data_runtime, instance_id) == "data of main"
    purged = await client.delete(
        f"/v1/instances/{instance_id}", params=_PURGE, headers=bearer(token)
    )
    assert purged.status_code == 202, purged.text
    generation = purged.json()["instance"]["generation"]
    assert purged.json()["intent"]["target_generation"] == generation
    await converge(data_reconciler)
    assert not data_runtime.data_path(instance_id).exists()
    assert data_runtime.deleted[-1] == instance_id
    assert data_runtime.kept.count(instance_id) == len(data_runtime.kept)  # (none since)
    assert await _snapshots(ctx, instance_id) == []
    undelete = await client.post(f"/v1/instances/{instance_id}/undelete", headers=bearer(token))
    assert undelete.status_code == 409, undelete.text
    again = await client.delete(
        f"/v1/instances/{instance_id}", params=_PURGE, headers=bearer(token)
    )
    assert again.json()["instance"]["generation"] == generation  # nothing kept: a repeat


async def test_a_purge_asked_while_the_delete_keeps_the_data_removes_it(
    client: httpx.AsyncClient,
    ctx: AppContext,
    data_runtime: DataFakeRuntime,
    data_reconciler: Reconciler,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The delete's pre_delete snapshot failed, so it keeps the data; the purge
    commits while it does (between its choice and its record): the delete's record
    of the data kept does not override the purge, whose own pass removes the data."""
    _, token = await create_tenant(client, "acme")
    instance_id = await running_with_data(client, token, "main", data_runtime, data_reconciler)
    keeping = data_runtime.delete
    purges: list[httpx.Response] = []

    async def purge_as_it_keeps(name: str, handle: Any, keep_data: bool) -> None:
        await keeping(name, handle, keep_data)
        failed = ("pre_delete", "failed") in await _snapshots(ctx, instance_id)
        if keep_data and failed and not purges:
            purged = await client.delete(
                f"/v1/instances/{name}", params=_PURGE, headers=bearer(token)
            )
            purges.append(purged)

    monkeypatch.setattr(data_runtime, "delete", purge_as_it_keeps)
    await deleted_keeping_its_data(
        client, token, instance_id, data_runtime, "failed_pre_delete", data_reconciler
    )
    (purged,) = purges
    assert purged.status_code == 202, purged.text
    assert not data_runtime.data_path(instance_id).exists()
    instance = await instance_row(ctx, instance_id)
    assert instance is not None
    assert (instance.phase, instance.keep_data) == ("deleted", False)
    assert instance.observed_generation == purged.json()["instance"]["generation"]


@pytest.mark.parametrize("between", [None, "restart"])
async def test_deleting_an_undelete_before_it_loaded_keeps_the_data_for_the_next(
    client: httpx.AsyncClient,
    ctx: AppContext,
    data_runtime: DataFakeRuntime,
    data_reconciler: Reconciler,
    between: str | None,
) -> None:
    """Deleted again before the undelete loaded its data: no pre_delete snapshot of
    the (empty) data directory, so the next undelete loads the data it had. Also
    when a restart came between (a generation after the undelete's: before, the
    delete asked that one's action, a restart, and took the empty snapshot)."""
    _, token = await create_tenant(client, "acme")
    instance_id = await running_with_data(client, token, "main", data_runtime, data_reconciler)
    await client.delete(f"/v1/instances/{instance_id}", headers=bearer(token))
    await converge(data_reconciler)
    undeleted = await client.post(f"/v1/instances/{instance_id}/undelete", headers=bearer(token))
    assert undeleted.status_code == 202, undeleted.text
    if between is not None:
        asked = await client.post(f"/v1/instances/{instance_id}/{between}", headers=bearer(token))
        assert asked.status_code == 202, asked.text
    again = await client.delete(f"/v1/instances/{instance_id}", headers=bearer(token))
    assert again.status_code == 202, again.text  # before any pass loaded the data
    await converge(data_reconciler)
    assert await _snapshots(ctx, instance_id) == [("pre_delete", "ready")]
    await _undeleted_with_its_data(client, token, instance_id, data_runtime, data_reconciler)


async def test_an_earlier_restores_failed_pre_restore_does_not_fail_an_undelete(
    client: httpx.AsyncClient,
    ctx: AppContext,
    data_runtime: DataFakeRuntime,
    data_reconciler: Reconciler,
) -> None:
    """A restore whose pre_restore snapshot failed (the data kept) long ago: that
    failure is that restore's, not the next undelete's (which takes none)."""
    _, token = await create_tenant(client, "acme")
    instance_id = await running_with_data(client, token, "main", data_runtime, data_reconciler)
    async with ctx.engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO snapshots (id, instance_id, tenant_id, kind, phase, store, attempts,"
                " created_at, updated_at, failure_reason) SELECT :snapshot, id, tenant_id,"
                " 'pre_restore', 'failed', 'local', 3, now() - interval '30 days', now(),"
                " 'StoreUnavailable' FROM instances WHERE id = :instance"
            ),
            {"snapshot": uuid.uuid4(), "instance": uuid.UUID(instance_id)},
        )
    await client.delete(f"/v1/instances/{instance_id}", headers=bearer(token))
    await converge(data_reconciler)
    undeleted = await client.post(f"/v1/instances/{instance_id}/undelete", headers=bearer(token))
    assert undeleted.status_code == 202, undeleted.text
    await converge(data_reconciler)
    back = (await _get(client, token, instance_id)).json()
    assert back["phase"] == "running", back["failure"]
    assert data_of(data_runtime, instance_id) == "data of main"


async def test_an_undelete_that_cannot_load_says_so_and_a_restore_brings_the_data(
    client: httpx.AsyncClient,
    ctx: AppContext,
    data_runtime: DataFakeRuntime,
    data_reconciler: Reconciler,
) -> None:
    """Its archive out of reach, an undelete fails without data, and says which
    snapshot still holds it (not "the instance kept its data"); once the archive is
    back, restoring that snapshot into the instance brings the data."""
    failed = await _undelete_that_cannot_load(client, ctx, data_runtime, data_reconciler)
    token, instance_id = failed.token, failed.instance_id
    back = (await _get(client, token, instance_id)).json()
    assert back["failure"]["reason"] == "ArchiveMissing", back["failure"]
    message = back["failure"]["message"]
    assert "it has no data" in message, message
    assert failed.snapshot_id in message, message
    assert "kept its data" not in message

    failed.bring_archive_back()
    restored = await ask_restore(client, token, instance_id, failed.snapshot_id)
    assert restored.status_code == 202, restored.text
    await converge(data_reconciler)
    assert (await _get(client, token, instance_id)).json()["phase"] == "running"
    assert data_of(data_runtime, instance_id) == "data of main"


@pytest.mark.parametrize("between", [None, "stop", "restore"])
async def test_deleting_an_undelete_that_could_not_load_keeps_the_data_for_the_next(
    client: httpx.AsyncClient,
    ctx: AppContext,
    data_runtime: DataFakeRuntime,
    data_reconciler: Reconciler,
    between: str | None,
) -> None:
    """An undelete whose load failed (its archive out of reach), deleted again: no
    pre_delete snapshot of its empty data directory. Before, that empty snapshot
    became the newest ready one, and the next undelete, once the archive was back,
    brought the instance back empty. Also when a request that runs no server came
    between: a stop, or a restore of that snapshot that failed too."""
    failed = await _undelete_that_cannot_load(client, ctx, data_runtime, data_reconciler)
    token, instance_id = failed.token, failed.instance_id
    if between == "restore":
        asked = await ask_restore(client, token, instance_id, failed.snapshot_id)
    elif between is not None:
        asked = await client.post(f"/v1/instances/{instance_id}/{between}", headers=bearer(token))
    if between is not None:
        assert asked.status_code == 202, asked.text
        await converge(data_reconciler)

    again = await client.delete(f"/v1/instances/{instance_id}", headers=bearer(token))
    assert again.status_code == 202, again.text
    await converge(data_reconciler)
    kept = [kind for kind in await _snapshots(ctx, instance_id) if kind[0] == "pre_delete"]
    assert kept == [("pre_delete", "ready")]  # (a failed restore took a pre_restore)

    failed.bring_archive_back()
    await _undeleted_with_its_data(client, token, instance_id, data_runtime, data_reconciler)


async def test_a_failed_undelete_started_empty_is_snapshotted_when_deleted(
    client: httpx.AsyncClient,
    ctx: AppContext,
    data_runtime: DataFakeRuntime,
    data_reconciler: Reconciler,
) -> None:
    """Started after its undelete failed, the instance runs on an empty directory and
    may take writes: a delete then snapshots what it has, as any delete does."""
    failed = await _undelete_that_cannot_load(client, ctx, data_runtime, data_reconciler)
    token, instance_id = failed.token, failed.instance_id
    started = await client.post(f"/v1/instances/{instance_id}/start", headers=bearer(token))
    assert started.status_code == 202, started.text
    await converge(data_reconciler)
    assert (await _get(client, token, instance_id)).json()["phase"] == "running"
    data_runtime.data_path(instance_id).mkdir(exist_ok=True)
    (data_runtime.data_path(instance_id) / "chroma.sqlite3").write_text("written since")

    await client.delete(f"/v1/instances/{instance_id}", headers=bearer(token))
    await converge(data_reconciler)
    kinds = await _snapshots(ctx, instance_id)
    assert kinds == [("pre_delete", "ready"), ("pre_delete", "ready")], kinds


async def test_retention_leaves_an_instance_an_undelete_holds_for_its_next_pass(
    client: httpx.AsyncClient,
    ctx: AppContext,
    data_runtime: DataFakeRuntime,
    data_reconciler: Reconciler,
) -> None:
    """Retention locks an instance's row before its snapshots', as an undelete does
    (the instance's, then its snapshot's): one an undelete holds at that moment is
    left for the next pass, and neither waits on the other (the other way round,
    PostgreSQL aborted one of the two as a deadlock)."""
    _, token = await create_tenant(client, "acme")
    instance_id = await running_with_data(client, token, "old", data_runtime, data_reconciler)
    await client.delete(f"/v1/instances/{instance_id}", headers=bearer(token))
    await converge(data_reconciler)
    await deleted_long_ago(ctx, instance_id)
    retention = Retention(ctx.sessions, RetentionSettings(batch=10), 168)
    async with ctx.sessions() as undeleting:  # an undelete's first lock
        await undeleting.execute(
            select(Instance.id).where(Instance.id == uuid.UUID(instance_id)).with_for_update()
        )
        passed = await asyncio.wait_for(retention.run_once(), timeout=30)
        assert passed["snapshots"] == 0  # left: the undelete holds the instance
        await undeleting.execute(  # and the undelete's next lock is free
            select(Snapshot.id).where(Snapshot.instance_id == uuid.UUID(instance_id))
            .with_for_update(read=True)
        )  # fmt: skip
        await undeleting.commit()
    assert await _snapshots(ctx, instance_id) == [("pre_delete", "ready")]
    assert (await retention.run_once())["snapshots"] == 1  # the next pass
