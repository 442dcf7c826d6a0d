"""A snapshot that a restore, clone or undelete loads is never deleted under it.

Whoever names a snapshot as the data to load holds its row ``FOR SHARE`` until that is
committed, and whoever marks one ``deleting`` locks it and then asks whether an
instance is restoring it (``domain/snapshot_access.py``). Each race is played with
a transaction held open and the other side's request waiting on it in PostgreSQL
(seen in ``pg_stat_activity``), then let go. And should a snapshot a restore still loads be
marked ``deleting`` all the same, the reconciler leaves its archive until the restore
is done (before, it deleted the archive, then failed on the row's foreign key in every
pass, the instance stuck and the data gone)."""

from __future__ import annotations

import asyncio
import uuid

import httpx
from sqlalchemy import select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from chroma_orch.context import AppContext
from chroma_orch.db.models import Instance, Snapshot
from chroma_orch.domain.principal import SYSTEM
from chroma_orch.domain.snapshot_access import restorable_snapshot
from chroma_orch.reconciler.loop import Reconciler
from tests.helpers import bearer, converge, wait_for
from tests.reconciler.doubles import DataFakeRuntime
from tests.reconciler.with_data import ask_restore, data_of, with_snapshot_asked


async def _with_snapshot(
    client: httpx.AsyncClient, runtime: DataFakeRuntime, reconciler: Reconciler
) -> tuple[str, str, str, str]:
    """(tenant id, token, instance id, id of a ready snapshot of its data)."""
    token, tenant_id, instance_id, snapshot_id = await with_snapshot_asked(
        client, runtime, reconciler, stopped=False
    )
    await converge(reconciler)
    snapshot = await client.get(f"/v1/snapshots/{snapshot_id}", headers=bearer(token))
    assert snapshot.json()["phase"] == "ready", snapshot.text
    return tenant_id, token, instance_id, snapshot_id


async def _waiting_on_a_lock(ctx: AppContext) -> bool:
    """Whether a backend of this test's database waits for a lock (the other side's
    request)."""
    async with ctx.engine.connect() as conn:
        waiting = await conn.scalar(
            text(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
        )
    return bool(waiting)


async def _phase(ctx: AppContext, snapshot_id: str) -> str | None:
    async with ctx.sessions() as session:
        found = await session.get(Snapshot, uuid.UUID(snapshot_id))
        return None if found is None else found.phase


async def test_a_delete_waits_for_a_restore_naming_the_snapshot_then_refuses(
    client: httpx.AsyncClient,
    ctx: AppContext,
    data_runtime: DataFakeRuntime,
    data_reconciler: Reconciler,
) -> None:
    tenant_id, token, instance_id, snapshot_id = await _with_snapshot(
        client, data_runtime, data_reconciler
    )
    async with ctx.sessions() as restoring:  # a restore, between its check and its commit
        await _lock_instance(restoring, instance_id)
        await restorable_snapshot(restoring, SYSTEM, uuid.UUID(snapshot_id), uuid.UUID(tenant_id))
        deleting = asyncio.create_task(
            client.delete(f"/v1/snapshots/{snapshot_id}", headers=bearer(token))
        )
        await wait_for(lambda: _waiting_on_a_lock(ctx))
        await _name_as_source(restoring, instance_id, snapshot_id)
        await restoring.commit()
    answer = await deleting
    assert answer.status_code == 409, answer.text
    assert "restoring it" in answer.json()["detail"]
    assert await _phase(ctx, snapshot_id) == "ready"


async def test_a_restore_holding_its_instance_and_a_delete_of_its_source_do_not_deadlock(
    client: httpx.AsyncClient,
    ctx: AppContext,
    data_runtime: DataFakeRuntime,
    data_reconciler: Reconciler,
) -> None:
    """A restore locks its instance, then the snapshot; the snapshot's DELETE, sent
    between the two, waits for the instance first (it also writes the instance: made
    due), so neither waits on the other (before, PostgreSQL aborted one: a deadlock)."""
    tenant_id, token, instance_id, snapshot_id = await _with_snapshot(
        client, data_runtime, data_reconciler
    )
    async with ctx.sessions() as restoring:
        await _lock_instance(restoring, instance_id)
        deleting = asyncio.create_task(
            client.delete(f"/v1/snapshots/{snapshot_id}", headers=bearer(token))
        )
        await wait_for(lambda: _waiting_on_a_lock(ctx))
        await restorable_snapshot(restoring, SYSTEM, uuid.UUID(snapshot_id), uuid.UUID(tenant_id))
        await _name_as_source(restoring, instance_id, snapshot_id)
        await restoring.commit()
    answer = await deleting
    assert answer.status_code == 409, answer.text
    assert await _phase(ctx, snapshot_id) == "ready"


async def _lock_instance(session: AsyncSession, instance_id: str) -> None:
    """What a restore or an undelete takes first: its instance's row."""
    await session.execute(
        select(Instance.id).where(Instance.id == uuid.UUID(instance_id)).with_for_update()
    )


async def _name_as_source(session: AsyncSession, instance_id: str, snapshot_id: str) -> None:
    await session.execute(
        update(Instance)
        .where(Instance.id == uuid.UUID(instance_id))
        .values(restore_snapshot_id=uuid.UUID(snapshot_id))
    )


async def test_a_restore_waits_for_a_delete_of_its_source_then_refuses(
    client: httpx.AsyncClient,
    ctx: AppContext,
    data_runtime: DataFakeRuntime,
    data_reconciler: Reconciler,
) -> None:
    _, token, instance_id, snapshot_id = await _with_snapshot(client, data_runtime, data_reconciler)
    async with ctx.sessions() as deleting:  # a snapshot's DELETE, before its commit
        await deleting.execute(
            select(Snapshot).where(Snapshot.id == uuid.UUID(snapshot_id)).with_for_update()
        )
        await deleting.execute(
            update(Snapshot).where(Snapshot.id == uuid.UUID(snapshot_id)).values(phase="deleting")
        )
        restoring = asyncio.create_task(ask_restore(client, token, instance_id, snapshot_id))
        await wait_for(lambda: _waiting_on_a_lock(ctx))
        await deleting.commit()
    answer = await restoring
    assert answer.status_code == 409, answer.text
    assert "deleting" in answer.json()["detail"]
    instance = await client.get(f"/v1/instances/{instance_id}", headers=bearer(token))
    assert instance.json()["phase"] == "running"


async def test_a_snapshot_marked_deleting_while_restored_fails_the_restore_and_no_more(
    client: httpx.AsyncClient,
    ctx: AppContext,
    data_runtime: DataFakeRuntime,
    data_reconciler: Reconciler,
) -> None:
    _, token, instance_id, snapshot_id = await _with_snapshot(client, data_runtime, data_reconciler)
    (data_runtime.data_path(instance_id) / "chroma.sqlite3").write_text("written later")
    answer = await ask_restore(client, token, instance_id, snapshot_id)
    assert answer.status_code == 202, answer.text
    async with ctx.engine.begin() as conn:  # marked deleting all the same (a writer
        await conn.execute(  # that does not follow the locks)
            update(Snapshot).where(Snapshot.id == uuid.UUID(snapshot_id)).values(phase="deleting")
        )
    await converge(data_reconciler)
    instance = (await client.get(f"/v1/instances/{instance_id}", headers=bearer(token))).json()
    assert instance["phase"] == "failed", instance
    assert instance["failure"]["reason"] == "SnapshotUnavailable", instance["failure"]
    assert data_of(data_runtime, instance_id) == "written later"  # kept
    # not stuck: it starts again on its own data, and the snapshot's delete goes ahead
    answer = await client.post(f"/v1/instances/{instance_id}/start", headers=bearer(token))
    assert answer.status_code == 202, answer.text
    await converge(data_reconciler)
    instance = (await client.get(f"/v1/instances/{instance_id}", headers=bearer(token))).json()
    assert instance["phase"] == "running", instance
    assert data_of(data_runtime, instance_id) == "written later"
    assert await _phase(ctx, snapshot_id) is None
