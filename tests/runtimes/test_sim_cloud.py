"""The shared simulated cloud (``sim.cloud_server``): several runtime objects, as
several service replicas, on one cloud process over HTTP (docs/sim-runtime.md, "A
shared cloud for several replicas"). The contract itself is the conformance suite's
``sim-remote``."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator, MutableMapping
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from chroma_orch.runtimes.base import (
    Endpoint,
    ExitCause,
    Handle,
    InstanceSpec,
    Observation,
    ObservedState,
    RuntimeUnavailableError,
    StartFailedError,
    StartPhase,
)
from chroma_orch.runtimes.sim import cloud_server, wire
from chroma_orch.runtimes.sim.cloud import forget
from chroma_orch.runtimes.sim.local import LocalCloud
from chroma_orch.runtimes.sim.runtime import SimRuntime
from chroma_orch.settings import SimRuntimeSettings
from tests.conftest import port_window
from tests.helpers import wait_for
from tests.runtimes.sim_cloud import CloudProcess, cloud_process


def spec() -> InstanceSpec:
    return InstanceSpec(instance_id=str(uuid.uuid4()), tenant_id="t", name="db", generation=1)


@pytest.fixture
def cloud() -> Iterator[CloudProcess]:
    with cloud_process() as running:
        yield running


@pytest.fixture
async def replicas(cloud: CloudProcess) -> AsyncIterator[tuple[SimRuntime, SimRuntime]]:
    """Two runtime objects on the one cloud, as two replicas' would be."""
    first = SimRuntime(cloud.replica())
    second = SimRuntime(cloud.replica())
    yield first, second
    await first.aclose()
    await second.aclose()


async def running(runtime: SimRuntime, instance: InstanceSpec) -> Handle:
    handle = await runtime.start(instance)
    assert (await runtime.wait_ready(handle, 10.0)).state is ObservedState.RUNNING
    return handle


async def exited(runtime: SimRuntime, instance_id: str, handle: Handle) -> Observation:
    async def probe() -> Observation | None:
        observed = (await runtime.poll({instance_id: handle}))[instance_id]
        return observed if observed.state is ObservedState.EXITED else None

    found: Observation = await wait_for(probe, timeout=10.0)
    return found


async def test_two_replicas_see_the_same_servers(replicas: tuple[SimRuntime, SimRuntime]) -> None:
    first, second = replicas
    one, two = spec(), spec()
    started = await running(first, one)
    await running(second, two)
    for runtime in replicas:
        assert sorted(await runtime.discover()) == sorted([one.instance_id, two.instance_id])
    handle = (await second.discover())[one.instance_id]
    assert handle.data == started.data
    observed = (await second.poll({one.instance_id: handle}))[one.instance_id]
    assert observed.state is ObservedState.RUNNING
    assert observed.endpoint is not None
    async with httpx.AsyncClient() as client:  # its responder lives in the cloud process
        answer = await client.get(f"{observed.endpoint.url}/api/v2/heartbeat")
    assert answer.status_code == 200
    adopted = await second.start(one)  # the other replica's server, not a second one
    assert adopted.data == started.data
    await second.stop(handle)
    assert (await exited(first, one.instance_id, started)).reason == "Stopped"
    assert list(await first.discover()) == [two.instance_id]


async def test_every_replica_hears_of_every_exit(
    cloud: CloudProcess, replicas: tuple[SimRuntime, SimRuntime]
) -> None:
    """A crash posted by a benchmark, and a stop by one replica, reach both replicas'
    on_exit callbacks."""
    first, second = replicas
    heard: dict[str, list[str]] = {"first": [], "second": []}
    first.on_exit(heard["first"].append)
    second.on_exit(heard["second"].append)
    crashed, stopped = spec(), spec()
    crashed_handle = await running(first, crashed)
    await second.wait_ready(await second.start(stopped), 10.0)  # after the watch began
    async with httpx.AsyncClient(base_url=cloud.url) as client:
        answer = await client.post(
            "/v1/crash", json={"instance_id": crashed.instance_id, "cause": "infrastructure"}
        )
    assert answer.status_code == 200
    await second.stop((await second.discover())[stopped.instance_id])
    both = sorted([crashed.instance_id, stopped.instance_id])

    async def all_heard() -> bool:
        return all(sorted(ids) == both for ids in heard.values())

    await wait_for(all_heard, timeout=10.0)
    observed = await exited(second, crashed.instance_id, crashed_handle)
    assert (observed.reason, observed.cause) == ("TaskRetired", ExitCause.INFRASTRUCTURE)


async def test_a_callback_that_raises_does_not_end_the_watch(
    replicas: tuple[SimRuntime, SimRuntime],
) -> None:
    """The exits after a callback's error are still heard, by it and the others."""
    runtime, _ = replicas
    heard: list[str] = []

    def broken(instance_id: str) -> None:
        raise RuntimeError(f"a callback's bug ({instance_id})")

    runtime.on_exit(broken)
    runtime.on_exit(heard.append)
    first, second = spec(), spec()
    for instance in (first, second):
        handle = await running(runtime, instance)
        await runtime.stop(handle)

        async def got(instance_id: str = instance.instance_id) -> bool:
            return instance_id in heard

        await wait_for(got, timeout=10.0)
    assert heard == [first.instance_id, second.instance_id]


async def test_a_dead_cloud_makes_calls_raise_unavailable(cloud: CloudProcess) -> None:
    runtime = SimRuntime(cloud.replica())
    runtime.on_exit(lambda _instance_id: None)  # its long-poll is open when the cloud dies
    instance = spec()
    handle = await running(runtime, instance)
    cloud.process.kill()
    cloud.process.wait()
    began = time.monotonic()
    with pytest.raises(RuntimeUnavailableError):
        await runtime.poll({instance.instance_id: handle})
    with pytest.raises(RuntimeUnavailableError):
        await runtime.start(spec())
    with pytest.raises(RuntimeUnavailableError):
        await runtime.discover()
    assert time.monotonic() - began < 2.0  # refused at once, not held
    await asyncio.wait_for(runtime.aclose(), 5.0)


async def test_the_cloud_takes_its_settings_from_its_own_environment() -> None:
    """Its CHROMA_ORCH_SIM__* decide the fates, whatever the replica's say; a failed
    start crosses the wire as the runtime's StartFailedError."""
    with cloud_process(CHROMA_ORCH_SIM__START_FAILURE_RATE="1") as cloud:
        runtime = SimRuntime(cloud.replica(start_failure_rate=0))
        try:
            with pytest.raises(StartFailedError) as failed:
                await runtime.start(spec())
            assert failed.value.reason in {"CapacityUnavailable", "CannotStartContainerError"}
        finally:
            await runtime.aclose()


async def test_health_and_bad_input(cloud: CloudProcess) -> None:
    async with httpx.AsyncClient(base_url=cloud.url) as client:
        health = await client.get("/v1/health")
        assert health.status_code == 200
        assert health.json()["servers"] == 0
        assert (await client.post("/v1/start", json={"name": "db"})).status_code == 400
        assert (await client.post("/v1/crash", content=b"not json")).status_code == 400
        assert (await client.get("/v1/exits", params={"since": "x"})).status_code == 400
        assert (await client.post("/v1/crash", json={"instance_id": "nobody"})).status_code == 200


def test_an_observation_crosses_the_wire_unchanged() -> None:
    now = datetime.now(UTC)
    observed = Observation(
        ObservedState.RUNNING,
        Endpoint("127.0.0.1", 20001),
        reason=None,
        phase=StartPhase.HEARTBEAT_ANSWERED,
        phase_times={StartPhase.PULLING: now, StartPhase.HEARTBEAT_ANSWERED: now},
    )
    assert wire.observation_from_json(wire.observation_to_json(observed)) == observed
    gone = Observation(ObservedState.EXITED, reason="TaskRetired", cause=ExitCause.INFRASTRUCTURE)
    assert wire.observation_from_json(wire.observation_to_json(gone)) == gone


def test_exits_are_watched_from_the_first_call_when_on_exit_came_before_a_loop(
    cloud: CloudProcess,
) -> None:
    """The service may register its callback while it is built, outside any loop."""
    heard: list[str] = []
    runtime = SimRuntime(cloud.replica())
    runtime.on_exit(heard.append)  # no running loop here

    async def scenario() -> None:
        instance = spec()
        handle = await running(runtime, instance)
        await runtime.stop(handle)

        async def stopped_heard() -> bool:
            return heard == [instance.instance_id]

        await wait_for(stopped_heard, timeout=10.0)
        await runtime.aclose()

    asyncio.run(scenario())


async def test_the_cloud_tells_its_draws_and_crashes_at_random(
    cloud: CloudProcess, replicas: tuple[SimRuntime, SimRuntime]
) -> None:
    """What benchmarks read of the simulation itself: each server's drawn start
    latency, and crashes of running servers at random, heard as any exit."""
    runtime, _ = replicas
    heard: list[str] = []
    runtime.on_exit(heard.append)
    instances = [spec() for _ in range(3)]
    for instance in instances:
        await running(runtime, instance)
    async with httpx.AsyncClient(base_url=cloud.url) as client:
        fates = (await client.get("/v1/fates")).json()["servers"]
        before = time.monotonic()
        crashed = (await client.post("/v1/crash-some", params={"count": 2})).json()["crashed"]
    assert sorted(f[0] for f in fates) == sorted(i.instance_id for i in instances)
    assert all(latency > 0 and not exited for _, _, _, latency, exited in fates)
    assert len(crashed) == 2
    assert all(before <= at <= time.monotonic() for _, at in crashed)  # one clock
    ids = sorted(instance_id for instance_id, _ in crashed)

    async def both_heard() -> bool:
        return sorted(heard) == ids

    await wait_for(both_heard, timeout=10.0)


async def test_a_caller_gone_before_its_request_was_read_is_not_an_error() -> None:
    """A replica killed while it sent a request (the fleet benchmark's kill -9): the
    cloud answers nothing to nobody, and logs no traceback (it raised out of the app)."""
    settings = SimRuntimeSettings(cluster=f"gone-{uuid.uuid4().hex}", port_range=port_window())
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> MutableMapping[str, Any]:
        return {"type": "http.disconnect"}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/observe",
        "headers": [(b"content-type", b"application/json")],
        "query_string": b"",
    }
    try:
        await cloud_server.app(LocalCloud(settings))(scope, receive, send)
    finally:
        forget(settings.cluster)
    assert sent[0]["status"] == 499
