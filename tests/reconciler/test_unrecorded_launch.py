"""A start that launched a server but died before recording it (``kill -9`` between
``RECORD_STARTING`` and the handle's write) leaves a live server no handle reaches.
A restore or a stop that comes next stops it, found by the runtime's listing, before
it touches the data: a restore never swaps the data under a live server (before, it
did, and then adopted that server), and a stopped instance leaves no server running."""

from __future__ import annotations

import httpx

from chroma_orch.context import AppContext
from chroma_orch.reconciler.loop import Reconciler
from tests.helpers import bearer, converge, create_tenant
from tests.reconciler.doubles import DataFakeRuntime
from tests.reconciler.with_data import (
    as_a_dead_pass_left_it,
    ask_restore,
    data_of,
    running_with_data,
)


async def _launched_unrecorded(ctx: AppContext, instance_id: str) -> None:
    """The row as a start that died after launching leaves it: starting, no handle,
    no lease, while the runtime's server lives on."""
    await as_a_dead_pass_left_it(ctx, instance_id, "starting")


async def test_a_restore_stops_a_server_no_start_recorded_before_the_swap(
    client: httpx.AsyncClient,
    ctx: AppContext,
    data_runtime: DataFakeRuntime,
    data_reconciler: Reconciler,
) -> None:
    _, token = await create_tenant(client, "acme")
    instance_id = await running_with_data(client, token, "main", data_runtime, data_reconciler)
    taken = await client.post(f"/v1/instances/{instance_id}/snapshots", headers=bearer(token))
    assert taken.status_code == 202, taken.text
    await converge(data_reconciler)
    (data_runtime.data_path(instance_id) / "chroma.sqlite3").write_text("written later")
    await _launched_unrecorded(ctx, instance_id)
    unrecorded = data_runtime.servers[instance_id]
    assert unrecorded.alive

    answer = await ask_restore(client, token, instance_id, taken.json()["id"])
    assert answer.status_code == 202, answer.text
    await converge(data_reconciler)

    assert not unrecorded.alive  # stopped before the data was replaced
    assert data_runtime.servers[instance_id].serial != unrecorded.serial  # a new server
    instance = (await client.get(f"/v1/instances/{instance_id}", headers=bearer(token))).json()
    assert instance["phase"] == "running", instance
    assert data_of(data_runtime, instance_id) == "data of main"


async def test_a_stop_stops_a_server_no_start_recorded(
    client: httpx.AsyncClient,
    ctx: AppContext,
    data_runtime: DataFakeRuntime,
    data_reconciler: Reconciler,
) -> None:
    _, token = await create_tenant(client, "acme")
    instance_id = await running_with_data(client, token, "main", data_runtime, data_reconciler)
    await _launched_unrecorded(ctx, instance_id)
    unrecorded = data_runtime.servers[instance_id]

    answer = await client.post(f"/v1/instances/{instance_id}/stop", headers=bearer(token))
    assert answer.status_code == 202, answer.text
    await converge(data_reconciler)

    assert not unrecorded.alive
    instance = (await client.get(f"/v1/instances/{instance_id}", headers=bearer(token))).json()
    assert instance["phase"] == "stopped", instance
    assert data_of(data_runtime, instance_id) == "data of main"  # kept
