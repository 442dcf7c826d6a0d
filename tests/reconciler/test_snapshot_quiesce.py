"""A live instance's snapshot stops its server for the copy and starts it again: what
the instance says meanwhile, against real PostgreSQL and real data directories."""

from __future__ import annotations

import uuid

import httpx
from sqlalchemy import select

from chroma_orch.context import AppContext
from chroma_orch.db.models import Event, Instance
from chroma_orch.reconciler.loop import Reconciler
from chroma_orch.runtimes.base import Handle
from chroma_orch.settings import Settings
from tests.helpers import bearer, converge, wait_for
from tests.reconciler.conftest import instance_body, instance_with_data
from tests.reconciler.doubles import DataFakeRuntime
from tests.reconciler.with_data import HeldStore, as_a_dead_pass_left_it


async def test_a_server_stopped_for_a_copy_never_reads_running(
    client: httpx.AsyncClient,
    ctx: AppContext,
    data_runtime: DataFakeRuntime,
    data_reconciler: Reconciler,
) -> None:
    """Between the copy and the server's new start the instance has no server. Each
    status it is written with (the event log keeps them all) is ``stopping`` there
    (the copy), then ``starting``, never ``running``: a service killed in that gap
    left it ``running`` with no endpoint, the API said so, and the data plane answered
    its clients 503."""
    token, instance_id = await instance_with_data(client, data_reconciler, data_runtime)
    async with ctx.engine.connect() as conn:
        since = await conn.scalar(select(Event.seq).order_by(Event.seq.desc()).limit(1))

    snapshot = await client.post(f"/v1/instances/{instance_id}/snapshots", headers=bearer(token))
    assert snapshot.status_code == 202, snapshot.text
    await converge(data_reconciler)

    ready = await client.get(f"/v1/snapshots/{snapshot.json()['id']}", headers=bearer(token))
    assert ready.json()["phase"] == "ready", ready.json()
    assert (await instance_body(client, token, instance_id))["phase"] == "running"
    assert data_runtime.stops[instance_id] == 1  # it was quiesced, not copied live
    async with ctx.engine.connect() as conn:
        statuses = list(
            await conn.scalars(
                select(Event.after)
                .where(Event.instance_id == uuid.UUID(instance_id), Event.seq > since)
                .where(Event.type.in_(("instance.phase_changed", "instance.status_changed")))
                .order_by(Event.seq)
            )
        )
    phases = [(s["phase"], s["endpoint"] is not None) for s in statuses]
    assert ("running", False) not in phases, phases
    assert ("stopping", False) in phases, phases  # the pause, as clients see it
    assert phases[-1] == ("running", True), phases


async def test_a_quiesce_a_dead_pass_left_starts_the_server_before_the_store_is_written(
    client: httpx.AsyncClient,
    ctx: AppContext,
    data_runtime: DataFakeRuntime,
    data_reconciler: Reconciler,
    api_settings: Settings,
) -> None:
    """The service died with the server stopped for a snapshot's copy (``stopping``,
    no server). The pass that takes over copies the data at rest and starts the server
    at once, as the quiesce would have; the archive is written while it serves. Before,
    it packed the directory into the store first, the server down all that time (and
    through every retry of a store that is unavailable)."""
    token, instance_id = await instance_with_data(client, data_reconciler, data_runtime)
    asked = await client.post(f"/v1/instances/{instance_id}/snapshots", headers=bearer(token))
    assert asked.status_code == 202, asked.text
    async with ctx.sessions() as session:
        row = await session.get(Instance, uuid.UUID(instance_id))
    assert row is not None
    assert row.handle is not None
    await data_runtime.stop(Handle.from_json(row.handle))
    await as_a_dead_pass_left_it(ctx, instance_id, "stopping")  # after RECORD_QUIESCED

    held = HeldStore(ctx.store)
    taking_over = Reconciler(ctx.sessions, data_runtime, api_settings, store=held)

    async def archive_begun() -> bool:
        await taking_over.run_once()
        return held.entered.is_set()

    await wait_for(archive_begun, timeout=10)
    body = await instance_body(client, token, instance_id)
    assert (body["phase"], body["endpoint"] is not None) == ("running", True), body

    held.go.set()
    await converge(taking_over)
    ready = await client.get(f"/v1/snapshots/{asked.json()['id']}", headers=bearer(token))
    assert ready.json()["phase"] == "ready", ready.json()
    assert data_runtime.stops[instance_id] == 1  # no second stop: the copy was at rest
