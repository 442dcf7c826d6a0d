"""The data a delete kept in place only for an undelete (its ``pre_delete`` snapshot
failed) is removed once the undelete's window has passed, before retention deletes
the row; data kept on request stays. Real PostgreSQL, a reconciler whose runtime
keeps real data directories, the real directory snapshot store."""

from __future__ import annotations

import uuid

import httpx
import pytest
from sqlalchemy import select

from chroma_orch.context import AppContext
from chroma_orch.db.models import Snapshot
from chroma_orch.db.retention import Retention
from chroma_orch.reconciler.kept_data_expiry import KeptDataExpiry
from chroma_orch.reconciler.loop import Reconciler
from chroma_orch.settings import RetentionSettings
from tests.helpers import bearer, converge, create_tenant, instance_row
from tests.reconciler.doubles import DataFakeRuntime
from tests.reconciler.with_data import (
    data_of,
    deleted_keeping_its_data,
    deleted_long_ago,
    running_with_data,
)


def _expiry(ctx: AppContext) -> KeptDataExpiry:
    return KeptDataExpiry(ctx.sessions, ctx.policy, ctx.snapshot_policy, 168)


async def _snapshot_phases(ctx: AppContext, instance_id: str) -> list[str]:
    async with ctx.sessions() as session:
        found = await session.scalars(
            select(Snapshot.phase).where(Snapshot.instance_id == uuid.UUID(instance_id))
        )
        return list(found)


async def _retain(ctx: AppContext, reconciler: Reconciler) -> list[uuid.UUID]:
    """One retention pass as the service runs it (the expiry first), and the
    reconciler's work it asks for; the instances whose kept data was purged."""
    purged = await _expiry(ctx).run_once()
    await Retention(ctx.sessions, RetentionSettings(), 168).run_once()
    await converge(reconciler)
    return purged


async def test_data_kept_for_a_failed_pre_delete_goes_before_the_row(
    client: httpx.AsyncClient,
    ctx: AppContext,
    data_runtime: DataFakeRuntime,
    data_reconciler: Reconciler,
) -> None:
    """Before, retention deleted the row and left the data directory (on ECS, the
    access point or the volumes and snapshots) with nothing pointing at it."""
    _, token = await create_tenant(client, "acme")
    instance_id = await running_with_data(client, token, "main", data_runtime, data_reconciler)
    await deleted_keeping_its_data(
        client, token, instance_id, data_runtime, "failed_pre_delete", data_reconciler
    )
    row = await instance_row(ctx, instance_id)
    assert row is not None
    assert (row.keep_data, row.data_kept_for_undelete) == (True, True)
    assert await _retain(ctx, data_reconciler) == []  # inside the window: kept
    assert data_of(data_runtime, instance_id) == "data of main"

    await deleted_long_ago(ctx, instance_id)
    assert await _retain(ctx, data_reconciler) == [uuid.UUID(instance_id)]
    assert not data_runtime.data_path(instance_id).exists()
    assert data_runtime.deleted[-1] == instance_id
    assert await _snapshot_phases(ctx, instance_id) == []  # the failed one went too
    row = await instance_row(ctx, instance_id)
    assert row is not None  # its delete recorded; the row goes on the next pass
    assert (row.keep_data, row.data_kept_for_undelete) == (False, False)
    assert row.observed_generation == row.generation

    assert await _retain(ctx, data_reconciler) == []
    assert await instance_row(ctx, instance_id) is None
    undelete = await client.post(f"/v1/instances/{instance_id}/undelete", headers=bearer(token))
    assert undelete.status_code == 404


async def test_a_later_pass_of_the_deleted_instance_keeps_the_mark(
    client: httpx.AsyncClient,
    ctx: AppContext,
    data_runtime: DataFakeRuntime,
    data_reconciler: Reconciler,
) -> None:
    """The tenant deletes the failed ``pre_delete`` snapshot: the deleted instance is
    reconciled again, and that pass finds the data kept (``keep_data`` set by the first
    one). Before, it took that for a request and cleared the mark: retention then
    deleted the row and left the data."""
    _, token = await create_tenant(client, "acme")
    instance_id = await running_with_data(client, token, "main", data_runtime, data_reconciler)
    await deleted_keeping_its_data(
        client, token, instance_id, data_runtime, "failed_pre_delete", data_reconciler
    )
    listed = await client.get(f"/v1/instances/{instance_id}/snapshots", headers=bearer(token))
    (failed,) = listed.json()["items"]
    gone = await client.delete(f"/v1/snapshots/{failed['id']}", headers=bearer(token))
    assert gone.status_code == 202, gone.text
    await converge(data_reconciler)
    assert await _snapshot_phases(ctx, instance_id) == []
    row = await instance_row(ctx, instance_id)
    assert row is not None
    assert (row.keep_data, row.data_kept_for_undelete) == (True, True)

    await deleted_long_ago(ctx, instance_id)
    assert await _retain(ctx, data_reconciler) == [uuid.UUID(instance_id)]
    assert not data_runtime.data_path(instance_id).exists()
    await _retain(ctx, data_reconciler)
    assert await instance_row(ctx, instance_id) is None


async def test_a_delete_asking_to_keep_the_data_kept_for_an_undelete_keeps_it(
    client: httpx.AsyncClient,
    ctx: AppContext,
    data_runtime: DataFakeRuntime,
    data_reconciler: Reconciler,
) -> None:
    """Its pre_delete snapshot failed, so the data stays for an undelete; a DELETE with
    ``keep_data=true`` then asks to keep it for good: a new request, not a repeat
    (which retention's purge would have overridden)."""
    _, token = await create_tenant(client, "acme")
    instance_id = await running_with_data(client, token, "main", data_runtime, data_reconciler)
    await deleted_keeping_its_data(
        client, token, instance_id, data_runtime, "failed_pre_delete", data_reconciler
    )
    asked = await client.delete(
        f"/v1/instances/{instance_id}", params={"keep_data": "true"}, headers=bearer(token)
    )
    assert asked.status_code == 202, asked.text
    assert asked.json()["intent"]["status"] == "pending"
    await converge(data_reconciler)
    row = await instance_row(ctx, instance_id)
    assert row is not None
    assert (row.keep_data, row.data_kept_for_undelete) == (True, False)
    again = await client.delete(
        f"/v1/instances/{instance_id}", params={"keep_data": "true"}, headers=bearer(token)
    )
    assert again.json()["instance"]["generation"] == row.generation  # now a repeat
    await deleted_long_ago(ctx, instance_id)
    assert await _retain(ctx, data_reconciler) == []
    await _retain(ctx, data_reconciler)
    assert await instance_row(ctx, instance_id) is None
    assert data_of(data_runtime, instance_id) == "data of main"


async def test_data_kept_on_request_stays_past_retention(
    client: httpx.AsyncClient,
    ctx: AppContext,
    data_runtime: DataFakeRuntime,
    data_reconciler: Reconciler,
) -> None:
    """``keep_data=true`` keeps the data for the operator, as documented: only the
    row goes (and its failed snapshot, with nothing in it)."""
    _, token = await create_tenant(client, "acme")
    instance_id = await running_with_data(client, token, "main", data_runtime, data_reconciler)
    (data_runtime.data_path(instance_id) / "link").symlink_to("chroma.sqlite3")  # fails too
    await deleted_keeping_its_data(
        client, token, instance_id, data_runtime, "keep_data", data_reconciler
    )
    row = await instance_row(ctx, instance_id)
    assert row is not None
    assert (row.keep_data, row.data_kept_for_undelete) == (True, False)
    await deleted_long_ago(ctx, instance_id)
    assert await _retain(ctx, data_reconciler) == []
    await _retain(ctx, data_reconciler)
    assert await instance_row(ctx, instance_id) is None
    assert data_of(data_runtime, instance_id) == "data of main"


@pytest.mark.parametrize("kept_by", ["keep_data", "failed_pre_delete"])
async def test_an_instance_undeleted_at_the_end_of_its_window_is_left_alone(
    client: httpx.AsyncClient,
    ctx: AppContext,
    data_runtime: DataFakeRuntime,
    data_reconciler: Reconciler,
    kept_by: str,
) -> None:
    """Undeleted just before retention would have purged it, and not brought back yet
    (its phase still ``deleted``, as old as the delete): neither the expiry nor the
    retention pass touch it (before, retention marked its snapshots ``deleting``, and
    deleted the row once none was left), and it comes back on its data."""
    _, token = await create_tenant(client, "acme")
    instance_id = await running_with_data(client, token, "main", data_runtime, data_reconciler)
    await deleted_keeping_its_data(
        client, token, instance_id, data_runtime, kept_by, data_reconciler
    )
    undeleted = await client.post(f"/v1/instances/{instance_id}/undelete", headers=bearer(token))
    assert undeleted.status_code == 202, undeleted.text
    await deleted_long_ago(ctx, instance_id)
    snapshots = await _snapshot_phases(ctx, instance_id)
    assert await _expiry(ctx).run_once() == []
    await Retention(ctx.sessions, RetentionSettings(), 168).run_once()
    assert await instance_row(ctx, instance_id) is not None
    assert await _snapshot_phases(ctx, instance_id) == snapshots  # none marked deleting
    await converge(data_reconciler)
    shown = await client.get(f"/v1/instances/{instance_id}", headers=bearer(token))
    assert shown.json()["phase"] == "running"
    assert data_of(data_runtime, instance_id) == "data of main"
