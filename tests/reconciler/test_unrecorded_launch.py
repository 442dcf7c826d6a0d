"""A start that launched a server but died before recording it (``kill -9`` between
``RECORD_STARTING`` and the handle's write) leaves a live server no handle reaches.
A restore or a stop that comes next stops it, found by the runtime's listing, before
it touches the data: a restore never swaps the data under a live server (before, it
did, and then adopted that server), and a stopped instance leaves no server running.
The orphan sweep leaves such a server to the instance's own pass.

A replica that lost the lease in the middle of a start cannot launch after that stop
either: the runtime sends no launch past the start's ``launch_by`` (its
``launch_budget`` after the recorded "starting"), which the stop waits out (with the
listing's ``visibility_grace``) before it lists."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import datetime

import httpx
import pytest

from chroma_orch.context import AppContext
from chroma_orch.db.models import Instance
from chroma_orch.reconciler.loop import Reconciler
from chroma_orch.runtimes.base import ExitCause, Handle, InstanceSpec, StartFailedError
from chroma_orch.settings import Settings
from tests.helpers import bearer, converge, create_tenant
from tests.reconciler.conftest import launch
from tests.reconciler.doubles import DataFakeRuntime
from tests.reconciler.with_data import (
    as_a_dead_pass_left_it,
    ask_restore,
    data_of,
    lease_lapses,
    replica,
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


@pytest.mark.parametrize("swept_first", [False, True])
async def test_a_stop_stops_a_server_no_start_recorded(
    client: httpx.AsyncClient,
    ctx: AppContext,
    data_runtime: DataFakeRuntime,
    data_reconciler: Reconciler,
    swept_first: bool,
) -> None:
    """``swept_first``: the orphan sweep comes before the instance's pass (as at a
    replica's start-up, right after one died mid-start) and leaves the server to that
    pass, which stops it and waits until it is gone. Before, the sweep stopped it
    without waiting, ECS no longer listed it once asked to stop, and the pass marked
    the instance stopped while the server still ran out its stop timeout on the data."""
    _, token = await create_tenant(client, "acme")
    instance_id = await running_with_data(client, token, "main", data_runtime, data_reconciler)
    await _launched_unrecorded(ctx, instance_id)
    unrecorded = data_runtime.servers[instance_id]

    answer = await client.post(f"/v1/instances/{instance_id}/stop", headers=bearer(token))
    assert answer.status_code == 202, answer.text
    if swept_first:
        assert await data_reconciler.collect_orphans() == 0  # was: 1
        assert unrecorded.alive
    await converge(data_reconciler)

    assert not unrecorded.alive
    instance = (await client.get(f"/v1/instances/{instance_id}", headers=bearer(token))).json()
    assert instance["phase"] == "stopped", instance
    assert data_of(data_runtime, instance_id) == "data of main"  # kept


class HeldLaunchRuntime(DataFakeRuntime):
    """Its next start, once ``hold`` is set, goes on only once ``go`` is set (a RunTask
    retried under throttling for as long as the test likes), and then launches unless
    its ``launch_by`` has passed (``FakeRuntime.start``); while ``refuse`` is set, starts
    find no capacity. Its listing shows a server ``visibility_grace`` after its launch,
    as ECS's ListTasks does."""

    visibility_grace = 0.2
    launch_budget = 1.5

    def __init__(self, data_runtime: DataFakeRuntime) -> None:
        super().__init__(data_runtime.ports, data_runtime.root)
        self.hold = False
        self.refuse = False
        self.entered = asyncio.Event()
        self.go = asyncio.Event()
        self.launched_at: dict[str, float] = {}

    async def start(self, spec: InstanceSpec) -> Handle:
        if self.hold:
            self.hold = False
            self.entered.set()
            await self.go.wait()
        elif self.refuse:
            raise StartFailedError("CapacityUnavailable", "no capacity", ExitCause.CAPACITY)
        handle = await super().start(spec)
        self.launched_at[spec.instance_id] = time.monotonic()
        return handle

    async def discover(self) -> dict[str, Handle]:
        listed = await super().discover()
        seen_from = time.monotonic() - self.visibility_grace
        return {key: h for key, h in listed.items() if self.launched_at.get(key, 0) <= seen_from}


async def _a_start_held(
    client: httpx.AsyncClient, ctx: AppContext, runtime: HeldLaunchRuntime, settings: Settings
) -> tuple[str, str, Reconciler]:
    """A new instance whose start, on replica "a", recorded "starting" and waits to
    send its launch (held)."""
    _, token = await create_tenant(client, "acme")
    instance_id = await launch(client, token, "main")
    runtime.hold = True
    first = Reconciler(ctx.sessions, runtime, replica(settings, "a"), store=ctx.store)
    assert await first.run_once() == 1
    await asyncio.wait_for(runtime.entered.wait(), 10)
    return token, instance_id, first


async def _a_start_held_then_its_lease_lapsed(
    client: httpx.AsyncClient, ctx: AppContext, runtime: HeldLaunchRuntime, settings: Settings
) -> tuple[str, str, Reconciler]:
    """``_a_start_held``, and its lease lapses (another replica may claim it)."""
    token, instance_id, first = await _a_start_held(client, ctx, runtime, settings)
    await lease_lapses(ctx, instance_id)
    return token, instance_id, first


async def _launch_by(ctx: AppContext, instance_id: str) -> datetime | None:
    async with ctx.sessions() as session:
        row = await session.get(Instance, uuid.UUID(instance_id))
        assert row is not None
        return row.launch_by


async def _nothing_launched_once_it_goes_on(
    runtime: HeldLaunchRuntime, first: Reconciler, instance_id: str
) -> None:
    """Let the held start go on: past its ``launch_by`` by now, it launches nothing."""
    runtime.go.set()
    await first.drain()
    await asyncio.sleep(runtime.visibility_grace)
    assert runtime.starts[instance_id] == 0, "a server was launched after the stop"
    assert await runtime.discover() == {}


async def _another_replica_fails_then_waits(
    ctx: AppContext, runtime: HeldLaunchRuntime, settings: Settings, instance_id: str
) -> Reconciler:
    """Replica "b" takes the instance over: its start finds no capacity (a crash
    backoff), and its next one, on a new start token, waits for the first replica's
    launch window (it launches nothing yet)."""
    second = Reconciler(ctx.sessions, runtime, replica(settings, "b"), store=ctx.store)
    runtime.refuse = True
    assert await second.run_once() == 1
    await second.drain()
    runtime.refuse = False
    await lease_lapses(ctx, instance_id)  # due now, not after the backoff
    assert await second.run_once() == 1
    await second.drain()
    assert runtime.starts[instance_id] == 0, "a start on a new token went before the window"
    return second


async def test_a_start_that_lost_its_lease_launches_nothing_after_a_stop(
    client: httpx.AsyncClient,
    ctx: AppContext,
    data_runtime: DataFakeRuntime,
    api_settings: Settings,
) -> None:
    runtime = HeldLaunchRuntime(data_runtime)
    token, instance_id, first = await _a_start_held_then_its_lease_lapsed(
        client, ctx, runtime, api_settings
    )
    stopped = await client.post(f"/v1/instances/{instance_id}/stop", headers=bearer(token))
    assert stopped.status_code == 202, stopped.text
    second = Reconciler(ctx.sessions, runtime, replica(api_settings, "b"), store=ctx.store)
    await converge(second)
    instance = (await client.get(f"/v1/instances/{instance_id}", headers=bearer(token))).json()
    assert instance["phase"] == "stopped", instance

    await _nothing_launched_once_it_goes_on(runtime, first, instance_id)


async def test_a_failed_start_of_another_replica_does_not_end_the_wait_for_the_first(
    client: httpx.AsyncClient,
    ctx: AppContext,
    data_runtime: DataFakeRuntime,
    api_settings: Settings,
) -> None:
    """The first replica's start waits to send its launch; its lease lapses, and the
    second replica's start of the instance fails (no capacity: a crash backoff). A
    stop then still waits for the first start's ``launch_by``, which the second's
    failure leaves as it was. (When the failure cleared it, the stop listed nothing
    at once, and the first replica launched after it, within its own budget.)"""
    runtime = HeldLaunchRuntime(data_runtime)
    token, instance_id, first = await _a_start_held_then_its_lease_lapsed(
        client, ctx, runtime, api_settings
    )
    runtime.refuse = True
    second = Reconciler(ctx.sessions, runtime, replica(api_settings, "b"), store=ctx.store)
    assert await second.run_once() == 1
    await second.drain()
    instance = (await client.get(f"/v1/instances/{instance_id}", headers=bearer(token))).json()
    assert instance["failure"]["reason"] == "CapacityUnavailable", instance

    stopped = await client.post(f"/v1/instances/{instance_id}/stop", headers=bearer(token))
    assert stopped.status_code == 202, stopped.text
    await converge(second)
    await _nothing_launched_once_it_goes_on(runtime, first, instance_id)


@pytest.mark.parametrize("first_launches", [True, False])
async def test_a_start_on_a_new_token_waits_for_the_earlier_launch(
    client: httpx.AsyncClient,
    ctx: AppContext,
    data_runtime: DataFakeRuntime,
    api_settings: Settings,
    first_launches: bool,
) -> None:
    """As above, and the second replica starts again (a new start token, after the
    crash backoff): it waits for the first start's ``launch_by``, then stops what the
    listing shows (the first replica's server, if it launched within its window),
    and only then launches its own. Before, it launched at once, and the first
    replica's launch on the old token came beside it: ECS answers that RunTask with a
    task of its own, on a volume of its own, and nothing stopped it while the
    instance ran (helper-72 #4)."""
    runtime = HeldLaunchRuntime(data_runtime)
    token, instance_id, first = await _a_start_held_then_its_lease_lapsed(
        client, ctx, runtime, api_settings
    )
    second = await _another_replica_fails_then_waits(ctx, runtime, api_settings, instance_id)
    late = None
    if first_launches:
        runtime.go.set()  # within its launch_by
        await first.drain()
        late = runtime.servers[instance_id]
        assert late.alive
    await converge(second)

    instance = (await client.get(f"/v1/instances/{instance_id}", headers=bearer(token))).json()
    assert instance["phase"] == "running", instance
    server = runtime.servers[instance_id]
    assert server.alive
    if late is not None:
        assert not late.alive, "the first replica's server was left beside the new one"
        assert server.serial != late.serial
        assert runtime.starts[instance_id] == 2
    else:
        assert runtime.starts[instance_id] == 1
        runtime.starts.clear()  # the second replica's: what counts is what comes after
        runtime.go.set()
        await first.drain()
        assert runtime.starts[instance_id] == 0, "a server was launched after the window"
        assert runtime.servers[instance_id] is server


async def test_a_launch_inside_the_window_is_found_and_stopped_by_the_stop(
    client: httpx.AsyncClient,
    ctx: AppContext,
    data_runtime: DataFakeRuntime,
    api_settings: Settings,
) -> None:
    """As above, and a stop is asked while the second replica's start waits: the first
    replica's launch goes out while the stop waits (before its ``launch_by``); once the
    window closes, the stop lists the servers and stops that one, though the instance
    is no longer "starting". (When only "starting"
    with no server listed, the stop waited out the window and then listed nothing.)"""
    runtime = HeldLaunchRuntime(data_runtime)
    token, instance_id, first = await _a_start_held_then_its_lease_lapsed(
        client, ctx, runtime, api_settings
    )
    second = await _another_replica_fails_then_waits(ctx, runtime, api_settings, instance_id)
    stopped = await client.post(f"/v1/instances/{instance_id}/stop", headers=bearer(token))
    assert stopped.status_code == 202, stopped.text
    assert await second.run_once() == 1  # the window still open
    await second.drain()
    assert await runtime.discover() == {}

    runtime.go.set()  # within its launch_by: the first replica launches
    await first.drain()
    late = runtime.servers[instance_id]
    assert late.alive
    await converge(second)

    assert not late.alive, "the server launched within the window was left running"
    instance = (await client.get(f"/v1/instances/{instance_id}", headers=bearer(token))).json()
    assert instance["phase"] == "stopped", instance


async def test_a_start_that_launched_nothing_ends_its_window(
    client: httpx.AsyncClient,
    ctx: AppContext,
    data_runtime: DataFakeRuntime,
    api_settings: Settings,
) -> None:
    """A start that kept its lease but reached its runtime only past its
    ``launch_by`` launched nothing (``LaunchTooLateError``): it says so, and a stop
    after it need not wait for a launch."""
    runtime = HeldLaunchRuntime(data_runtime)
    _, instance_id, first = await _a_start_held(client, ctx, runtime, api_settings)
    assert await _launch_by(ctx, instance_id) is not None  # "starting": its launch may come
    await asyncio.sleep(runtime.launch_budget)
    runtime.go.set()
    await first.drain()

    assert runtime.starts[instance_id] == 0
    assert await _launch_by(ctx, instance_id) is None
