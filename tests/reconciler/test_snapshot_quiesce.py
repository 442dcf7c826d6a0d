"""A live instance's snapshot stops its server for the copy and starts it again: what
the instance says meanwhile, against real PostgreSQL and real data directories."""

from __future__ import annotations

import uuid

import httpx
from sqlalchemy import select

from chroma_orch.context import AppContext
from chroma_orch.db.models import Event
from chroma_orch.reconciler.loop import Reconciler
from tests.helpers import bearer, converge
from tests.reconciler.conftest import instance_body, instance_with_data
from tests.reconciler.doubles import DataFakeRuntime


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
