"""Every promise of the runtime contract (chroma_orch.runtimes.base), on every runtime.

One test per edge case the contract's docstrings promise (the module's list and the
``Runtime`` methods': ``heartbeat``, ``poll`` of many, ``stop``, ``delete`` with and
without ``keep_data``, ``wait_ready`` timing out); each runs on the fake, sim,
sim-remote, local and ECS-on-moto runtimes (conftest.py, kits.py), none skipped.
Where the contract lets a runtime differ, its kit says how (``notices_exits``,
``reaches_servers``) and the test asserts that behaviour.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import replace

import pytest

from chroma_orch.runtimes.base import (
    Handle,
    LaunchTooLateError,
    Observation,
    ObservedState,
    Runtime,
    RuntimeUnavailableError,
)
from tests.helpers import wait_for
from tests.runtimes.conformance.kits import Kit, spec

READY = 30.0


def new_id() -> str:
    return str(uuid.uuid4())


async def running(runtime: Runtime, instance_id: str) -> Handle:
    handle = await runtime.start(spec(instance_id))
    observed = await wait_for(lambda: _running(runtime, instance_id, handle), timeout=READY)
    assert observed.endpoint is not None
    return handle


async def _running(runtime: Runtime, instance_id: str, handle: Handle) -> Observation | None:
    observed = await runtime.wait_ready(handle, 1.0)
    if observed.state is ObservedState.EXITED:
        raise AssertionError(f"the server exited: {observed}")
    return observed if observed.state is ObservedState.RUNNING else None


async def state_of(runtime: Runtime, instance_id: str, handle: Handle) -> ObservedState:
    return (await runtime.poll({instance_id: handle}))[instance_id].state


async def exited(runtime: Runtime, instance_id: str, handle: Handle) -> Observation:
    async def probe() -> Observation | None:
        observed = (await runtime.poll({instance_id: handle}))[instance_id]
        return observed if observed.state is ObservedState.EXITED else None

    found: Observation = await wait_for(probe, timeout=READY)
    return found


async def test_start_reports_running_and_stop_ends_it(runtime: Runtime) -> None:
    instance_id = new_id()
    handle = await running(runtime, instance_id)
    assert handle.generation == 1  # declared: what the reconciler compares
    assert Handle.from_json(handle.to_json()) == handle  # stored on the row as JSON
    polled = await runtime.poll({instance_id: handle})
    assert polled[instance_id].state is ObservedState.RUNNING
    await runtime.stop(handle)
    await exited(runtime, instance_id, handle)


async def test_poll_of_a_gone_server_answers_exited(runtime: Runtime) -> None:
    instance_id = new_id()
    handle = await running(runtime, instance_id)
    await runtime.delete(instance_id, handle, keep_data=False)
    observed = await exited(runtime, instance_id, handle)
    assert observed.reason
    assert await runtime.poll({}) == {}


async def test_stop_of_a_gone_server_is_a_no_op(runtime: Runtime) -> None:
    instance_id = new_id()
    handle = await running(runtime, instance_id)
    await runtime.stop(handle)
    await exited(runtime, instance_id, handle)
    await runtime.stop(handle)
    await runtime.delete(instance_id, handle, keep_data=False)
    await runtime.stop(handle)
    assert (await runtime.poll({instance_id: handle}))[instance_id].state is ObservedState.EXITED


async def test_a_handle_it_cannot_read_is_exited_and_its_stop_a_no_op(runtime: Runtime) -> None:
    """A handle written by another runtime or release, or damaged, names no server the
    runtime knows: EXITED with a reason (the reconciler then starts the instance again
    instead of failing on it at every pass), and stopping it does nothing."""
    instance_id = new_id()
    for unreadable in (Handle(None, {}), Handle(1, {"unrelated": "field"})):
        observed = (await runtime.poll({instance_id: unreadable}))[instance_id]
        assert observed.state is ObservedState.EXITED
        assert observed.reason
        await runtime.stop(unreadable)


async def test_poll_answers_for_each_handle_keyed_as_given(kit: Kit, runtime: Runtime) -> None:
    running_id, stopped_id, never_id = new_id(), new_id(), new_id()
    handles = {
        running_id: await running(runtime, running_id),
        stopped_id: await running(runtime, stopped_id),
        never_id: kit.never_started(never_id),
    }
    await runtime.stop(handles[stopped_id])
    await exited(runtime, stopped_id, handles[stopped_id])
    expected = {
        running_id: ObservedState.RUNNING,
        stopped_id: ObservedState.EXITED,
        never_id: ObservedState.EXITED,
    }
    for asked in (handles, dict(reversed(handles.items()))):  # answers follow keys, not order
        polled = await runtime.poll(asked)
        assert polled.keys() == handles.keys()
        assert {key: o.state for key, o in polled.items()} == expected


async def test_heartbeat_answers_for_a_running_server_not_for_a_gone_one(
    kit: Kit, runtime: Runtime
) -> None:
    """A runtime that cannot reach its servers answers True (not checked)."""
    instance_id = new_id()
    handle = await running(runtime, instance_id)
    endpoint = (await runtime.poll({instance_id: handle}))[instance_id].endpoint
    assert endpoint is not None
    assert await runtime.heartbeat({instance_id: endpoint}, 5.0) == {instance_id: True}
    await runtime.stop(handle)
    await exited(runtime, instance_id, handle)
    gone = await runtime.heartbeat({instance_id: endpoint}, 5.0)
    assert gone == {instance_id: not kit.reaches_servers}


async def test_stop_may_return_early_poll_follows_it_to_exited(runtime: Runtime) -> None:
    """After ``stop``, poll says STOPPING until EXITED, never live again; a stop
    while it stops (or once gone) is a no-op."""
    instance_id = new_id()
    handle = await running(runtime, instance_id)
    seen: list[ObservedState] = []

    async def gone() -> bool:
        seen.append(await state_of(runtime, instance_id, handle))
        return seen[-1] is ObservedState.EXITED

    await runtime.stop(handle)
    await gone()
    await runtime.stop(handle)  # while it stops, or once gone
    await wait_for(gone, timeout=READY)
    assert set(seen) <= {ObservedState.STOPPING, ObservedState.EXITED}, seen
    await runtime.stop(handle)
    assert await state_of(runtime, instance_id, handle) is ObservedState.EXITED


async def test_delete_releases_the_data_unless_keep_data(kit: Kit, runtime: Runtime) -> None:
    instance_id = new_id()
    handle = await running(runtime, instance_id)
    await runtime.stop(handle)
    await exited(runtime, instance_id, handle)
    assert await kit.has_data(instance_id)  # there is data to release
    await runtime.delete(instance_id, handle, keep_data=True)
    assert await kit.has_data(instance_id)
    await runtime.delete(instance_id, handle, keep_data=False)
    assert not await kit.has_data(instance_id)


async def test_wait_ready_answers_starting_on_timeout(kit: Kit) -> None:
    """ECS may answer STARTING at once; no runtime waits much beyond ``timeout``."""
    instance_id = new_id()
    async with kit.slow_start() as runtime:
        handle = await runtime.start(spec(instance_id))
        try:
            began = time.monotonic()
            observed = await runtime.wait_ready(handle, 0.5)
            assert observed.state is ObservedState.STARTING
            assert time.monotonic() - began < 5.0
        finally:
            await runtime.stop(handle)


async def test_delete_of_an_instance_never_started_is_a_no_op(runtime: Runtime) -> None:
    instance_id = new_id()
    await runtime.delete(instance_id, None, keep_data=False)
    await runtime.delete(instance_id, None, keep_data=True)
    assert instance_id not in await runtime.discover()


async def test_a_start_past_its_launch_by_launches_nothing(runtime: Runtime) -> None:
    """``InstanceSpec.launch_by`` passed (a replica that lost its lease while its
    start waited, e.g. a RunTask retried under throttling): the start raises
    ``LaunchTooLateError``, retried later as any ``RuntimeUnavailableError``, and no
    server of the instance appears, even once a listing lagging behind (ECS's
    eventual consistency, 0.3 s in tests) would show it. A start in time works."""
    instance_id = new_id()
    late = replace(spec(instance_id), launch_by=time.monotonic() - 1.0)
    with pytest.raises(LaunchTooLateError):
        await runtime.start(late)
    await asyncio.sleep(0.6)
    assert instance_id not in await runtime.discover()
    in_time = replace(spec(instance_id), launch_by=time.monotonic() + 60.0)
    handle = await runtime.start(in_time)
    await runtime.stop(handle)


async def test_start_of_a_running_instance_adopts_its_server(kit: Kit, runtime: Runtime) -> None:
    """The service crashed between start and saving the handle: the next start, by a
    new runtime object, returns that server instead of starting a second one."""
    instance_id = new_id()
    first = await running(runtime, instance_id)
    restarted = kit.make()
    try:
        adopted = await restarted.start(spec(instance_id))
        assert (await restarted.wait_ready(adopted, READY)).state is ObservedState.RUNNING
        assert list(await restarted.discover()) == [instance_id]  # still one server
        await restarted.stop(adopted)
        await exited(runtime, instance_id, first)  # the one server, stopped
    finally:
        await restarted.aclose()


async def test_discover_after_a_restart_finds_the_servers(kit: Kit, runtime: Runtime) -> None:
    ids = sorted([new_id(), new_id()])
    handles = {instance_id: await running(runtime, instance_id) for instance_id in ids}
    await runtime.aclose()
    restarted = kit.make()
    try:
        found = await restarted.discover()
        assert sorted(found) == ids
        polled = await restarted.poll(found)
        assert {o.state for o in polled.values()} == {ObservedState.RUNNING}
        await restarted.stop(found[ids[0]])
        await exited(restarted, ids[0], handles[ids[0]])  # the found handle names the server
        assert list(await restarted.discover()) == [ids[1]]
    finally:
        await restarted.aclose()


async def test_a_server_that_dies_by_itself_is_reported(kit: Kit, runtime: Runtime) -> None:
    exits: list[str] = []
    runtime.on_exit(exits.append)
    instance_id = new_id()
    handle = await running(runtime, instance_id)
    await kit.crash(handle)
    observed = await exited(runtime, instance_id, handle)
    assert observed.reason
    if kit.notices_exits:
        await wait_for(lambda: _called(exits, instance_id), timeout=READY)
    assert instance_id not in await runtime.discover()


async def _called(exits: list[str], instance_id: str) -> bool:
    return instance_id in exits


async def test_logs_read_and_follow_the_output(kit: Kit, runtime: Runtime) -> None:
    instance_id = new_id()
    assert await runtime.logs(instance_id, None, 10) == []  # never started: nothing
    handle = await running(runtime, instance_id)
    await kit.write_line(instance_id, handle, "conformance one")
    assert await wait_for(lambda: _last_is(runtime, instance_id, handle, "conformance one"))
    follow = runtime.follow_logs(instance_id, handle, 1)
    assert await asyncio.wait_for(anext(follow), READY) == ["conformance one"]
    await kit.write_line(instance_id, handle, "conformance two")
    assert "conformance two" in await asyncio.wait_for(anext(follow), READY)
    await runtime.delete(instance_id, handle, keep_data=False)
    rest = await asyncio.wait_for(_drain(follow), READY)  # it ends: gone for good
    assert "conformance two" not in rest


async def _last_is(runtime: Runtime, instance_id: str, handle: Handle, line: str) -> bool:
    return await runtime.logs(instance_id, handle, 1) == [line]


async def _drain(follow: object) -> list[str]:
    lines: list[str] = []
    async for batch in follow:  # type: ignore[attr-defined]
        lines.extend(batch)
    return lines


async def test_a_transient_failure_raises_runtime_unavailable(kit: Kit) -> None:
    instance_id = new_id()
    async with kit.unavailable(instance_id) as runtime:
        with pytest.raises(RuntimeUnavailableError):
            await runtime.start(spec(instance_id))
