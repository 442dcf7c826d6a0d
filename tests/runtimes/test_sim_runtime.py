"""The simulated runtime (docs/sim-runtime.md): its draws are reproducible and follow
the configured distributions, it keeps to its API budgets, its responders answer
heartbeats until their server is gone, and the service runs an instance on it."""

from __future__ import annotations

import asyncio
import errno
import socket
import statistics
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from chroma_orch.app import create_app
from chroma_orch.reconciler.loop import observe_batch
from chroma_orch.runtimes.base import (
    Endpoint,
    ExitCause,
    Handle,
    InstanceSpec,
    Observation,
    ObservedState,
    StartFailedError,
)
from chroma_orch.runtimes.instrumented import InstrumentedRuntime
from chroma_orch.runtimes.sim.cloud import cloud, forget
from chroma_orch.runtimes.sim.model import Draws
from chroma_orch.runtimes.sim.runtime import SimRuntime
from chroma_orch.settings import SimRuntimeSettings
from tests.conftest import ADMIN_TOKEN, make_settings, port_window
from tests.helpers import bearer, create_tenant, wait_phase
from tests.runtimes.test_registry import register

DRAWS = 20_000


@pytest.fixture
def cluster() -> Iterator[str]:
    name = f"sim-test-{uuid.uuid4().hex}"
    yield name
    forget(name)


def settings(cluster: str, **values: object) -> SimRuntimeSettings:
    base: dict[str, object] = {"cluster": cluster, "time_scale": 0.001, "port_range": port_window()}
    return SimRuntimeSettings.model_validate({**base, **values})


def spec(n: int = 0) -> InstanceSpec:
    return InstanceSpec(instance_id=str(uuid.uuid4()), tenant_id="t", name=f"db{n}", generation=1)


def test_the_same_seed_draws_the_same_fates() -> None:
    config = SimRuntimeSettings(seed=7, start_failure_rate=0.3, crash_rate=2, retirement_rate=1)
    first, second = Draws(config), Draws(config)
    fates = [first.fate() for _ in range(500)]
    assert fates == [second.fate() for _ in range(500)]
    other = Draws(config.model_copy(update={"seed": 8}))
    assert fates != [other.fate() for _ in range(500)]


def test_the_start_latency_has_the_configured_median_and_p95() -> None:
    draws = Draws(SimRuntimeSettings(seed=1))  # defaults: median 40 s, p95 120 s
    latencies = sorted(draws.fate().latency for _ in range(DRAWS))
    assert statistics.median(latencies) == pytest.approx(40.0, rel=0.05)
    assert latencies[int(DRAWS * 0.95)] == pytest.approx(120.0, rel=0.07)
    assert latencies[0] >= 5.0  # start_min
    for fate in (draws.fate() for _ in range(50)):
        times = [at for _, at in fate.phases]
        assert times == sorted(times)
        assert times[-1] == fate.latency  # heartbeat_answered at the latency


def test_failures_crashes_and_retirements_follow_their_rates() -> None:
    draws = Draws(
        SimRuntimeSettings(
            seed=3, start_failure_rate=0.2, capacity_share=0.25, crash_rate=3, retirement_rate=1
        )
    )
    fates = [draws.fate() for _ in range(DRAWS)]
    failed = [fate.failure for fate in fates if fate.failure is not None]
    assert len(failed) / DRAWS == pytest.approx(0.2, abs=0.015)
    assert failed.count(ExitCause.CAPACITY) / len(failed) == pytest.approx(0.25, abs=0.03)
    assert set(failed) == {ExitCause.CAPACITY, ExitCause.CRASH}
    lifetimes = [fate.exit_after for fate in fates if fate.exit_after is not None]
    assert len(lifetimes) == DRAWS  # every server exits some day at these rates
    assert statistics.mean(lifetimes) == pytest.approx(3600 / 4, rel=0.05)  # 4 exits/hour
    retired = sum(fate.exit_cause is ExitCause.INFRASTRUCTURE for fate in fates)
    assert retired / DRAWS == pytest.approx(0.25, abs=0.02)


async def test_a_seeded_cloud_fails_the_same_starts(cluster: str) -> None:
    outcomes = []
    for run in range(2):
        name = f"{cluster}-{run}"
        runtime = SimRuntime(settings(name, seed=11, start_failure_rate=0.4))
        result = []
        for n in range(20):
            try:
                handle = await runtime.start(spec(n))
            except StartFailedError as failed:
                result.append(failed.cause.value)
            else:
                result.append("started")
                await runtime.delete(str(handle.data["instance_id"]), handle, keep_data=False)
        outcomes.append(result)
        forget(name)
    assert outcomes[0] == outcomes[1]
    assert {"started", "capacity", "crash"} <= set(outcomes[0])


async def test_a_seeded_cloud_crashes_the_same_servers(cluster: str) -> None:
    """``crash_some`` (the fleet benchmark's crashes) picks among the running servers
    by the seed, apart from the draws: two runs crash the same instances, and the
    starts after it get the same fates as in a cloud where nothing was crashed."""
    ids = [str(uuid.UUID(int=n + 1)) for n in range(12)]
    picked, next_fates = [], []
    for run in range(3):
        name = f"{cluster}-{run}"
        runtime = SimRuntime(settings(name, seed=5, start_failure_rate=0.0))
        handles = [
            await runtime.start(
                InstanceSpec(instance_id=i, tenant_id="t", name=f"db{n}", generation=1)
            )
            for n, i in enumerate(ids)
        ]
        for handle in handles:
            assert (await runtime.wait_ready(handle, 30.0)).state is ObservedState.RUNNING
        crashed = [i for i, _ in cloud(runtime.settings).crash_some(4)] if run < 2 else []
        picked.append(crashed)
        next_fates.append(cloud(runtime.settings).draws.fate())
        for handle in handles:
            await runtime.delete(str(handle.data["instance_id"]), handle, keep_data=False)
        forget(name)
    assert picked[0] == picked[1]
    assert len(set(picked[0])) == 4
    assert next_fates[0] == next_fates[1] == next_fates[2]


async def test_starts_and_polls_keep_to_their_rate_budgets(cluster: str) -> None:
    """One start fits a budget of one RunTask; the second waits (for 1000 s: it is
    cancelled). A poll of 250 servers takes three describe calls of a budget of three."""
    limits = {"run": (1, 0.001), "describe": (3, 0.001), "stop": (100, 40.0)}
    runtime = SimRuntime(settings(cluster, api_limits=limits, start_failure_rate=0.0))
    handle = await runtime.start(spec())
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(runtime.start(spec(1)), 0.5)
    handles = {  # 250 servers (unknown to the cloud: gone), a key each
        f"k{n}": Handle(handle.generation, {**handle.data, "instance_id": f"i{n}"})
        for n in range(250)
    }
    assert len(await runtime.poll(handles)) == 250
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(runtime.poll({"k": handle}), 0.5)


async def test_concurrent_polls_share_the_describe_budget(cluster: str) -> None:
    """Ten reconciles polling their own server at once spend one call of the
    describe budget, as the ECS runtime's DescribeTasks are coalesced: before, one
    call each, and at 10,000 instances a fleet's starts and stops queued behind the
    budget (bench/fleet.py)."""
    limits = {"run": (100, 100.0), "describe": (1, 0.001), "stop": (100, 40.0)}
    runtime = SimRuntime(settings(cluster, api_limits=limits, start_failure_rate=0.0))
    handles = [await runtime.start(spec(n)) for n in range(10)]
    polls = [runtime.poll({f"k{n}": handle}) for n, handle in enumerate(handles)]
    observed = await asyncio.wait_for(asyncio.gather(*polls), 5)
    assert [list(o) for o in observed] == [[f"k{n}"] for n in range(10)]
    with pytest.raises(TimeoutError):  # the one call there was is spent
        await asyncio.wait_for(runtime.poll({"k": handles[0]}), 0.5)
    await runtime.aclose()


async def test_starts_followed_at_once_share_the_clouds_requests(
    cluster: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Twenty starts followed at once ask the cloud together, a request a round,
    outside the describe budget (its one call is left). Before, each start asked by
    itself: at 10,000 instances, 2,500 requests a second, a fifth of a replica's CPU."""
    limits = {"run": (100, 100.0), "describe": (1, 0.001), "stop": (100, 40.0)}
    runtime = SimRuntime(settings(cluster, api_limits=limits, start_failure_rate=0.0))
    asked: list[int] = []
    observe = runtime.cloud.observe

    async def counted(servers: Sequence[tuple[str, int]]) -> list[Observation]:
        asked.append(len(servers))
        return await observe(servers)

    monkeypatch.setattr(runtime.cloud, "observe", counted)
    handles = [await runtime.start(spec(n)) for n in range(20)]
    observed = await asyncio.gather(*(runtime.wait_ready(h, 10.0) for h in handles))
    assert {o.state for o in observed} == {ObservedState.RUNNING}
    assert max(asked) > 1, asked  # several starts' checks in one request
    assert len(asked) < sum(asked), asked
    await asyncio.wait_for(runtime.poll({"k": handles[0]}), 5)  # the budget's call
    await runtime.aclose()


def test_the_liveness_batch_is_half_what_the_poll_budget_allows(cluster: str) -> None:
    """20 describe calls a second of 100 servers: a liveness pass every second polls
    1,000 servers (half the budget), not the 5,000 that took it all."""
    runtime = SimRuntime(settings(cluster))
    assert observe_batch(runtime, 1.0) == 1000
    assert observe_batch(InstrumentedRuntime(runtime), 1.0) == 1000
    assert observe_batch(runtime, 60.0) == 5000
    assert observe_batch(runtime, 0.001) == 100


async def running(runtime: SimRuntime) -> tuple[Handle, Endpoint]:
    handle = await runtime.start(spec())
    observed = await runtime.wait_ready(handle, 30.0)
    assert observed.state is ObservedState.RUNNING, observed
    assert observed.endpoint is not None
    assert observed.phase is not None
    assert observed.phase.value == "heartbeat_answered"
    assert len(observed.phase_times) == 6  # provisioning ... heartbeat_answered
    return handle, observed.endpoint


async def test_the_responder_answers_until_its_server_crashes(cluster: str) -> None:
    runtime = SimRuntime(settings(cluster, start_failure_rate=0.0))
    handle, endpoint = await running(runtime)
    instance_id = str(handle.data["instance_id"])
    async with httpx.AsyncClient(base_url=endpoint.url) as http:
        beat = await http.get("/api/v2/heartbeat")
        assert beat.status_code == 200
        assert beat.json()["nanosecond heartbeat"] > 0
        assert (await http.get("/api/v2/version")).json() == "1.5.9"
        listed = await http.get(
            "/api/v2/tenants/default_tenant/databases/default_database/collections"
        )
        assert listed.json() == []
        assert (await http.post("/api/v2/anything", json={})).status_code == 501
        assert (await http.get("/elsewhere")).status_code == 404
    assert await runtime.heartbeat({instance_id: endpoint}, 2.0) == {instance_id: True}
    cloud(runtime.settings).crash(instance_id)
    assert await runtime.heartbeat({instance_id: endpoint}, 2.0) == {instance_id: False}
    with pytest.raises(httpx.ConnectError):
        async with httpx.AsyncClient(base_url=endpoint.url) as http:
            await http.get("/api/v2/heartbeat")
    observed = (await runtime.poll({instance_id: handle}))[instance_id]
    assert observed.state is ObservedState.EXITED
    assert observed.cause is ExitCause.CRASH


async def test_a_block_of_ports_another_process_holds_is_passed_over(cluster: str) -> None:
    """Another process (a second cloud, a benchmark's) holds the range's first 200
    ports: each start tries past them instead of failing after a few."""
    low = int(port_window(400).split("-")[0])
    held = []
    for port in range(low, low + 200):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as error:  # a test beside this one holds it: held all the same
            sock.close()
            if error.errno != errno.EADDRINUSE:
                raise
            continue
        sock.listen()
        held.append(sock)
    runtime = SimRuntime(settings(cluster, port_range=f"{low}-{low + 399}", start_failure_rate=0))
    try:
        for _ in range(3):
            handle = await runtime.start(spec())
            assert low + 200 <= handle.data["port"] <= low + 399
        for handle in (await runtime.discover()).values():
            await runtime.stop(handle)
    finally:
        for sock in held:
            sock.close()
        await runtime.aclose()


async def test_a_retired_server_exits_by_itself_as_infrastructure(cluster: str) -> None:
    """Retirements at 36,000 an hour of a clock 1000 times faster: within ms."""
    runtime = SimRuntime(settings(cluster, start_failure_rate=0.0, retirement_rate=36_000))
    exits: list[str] = []
    runtime.on_exit(exits.append)
    handle = await runtime.start(spec())
    instance_id = str(handle.data["instance_id"])
    for _ in range(600):  # poll with a deadline (30 s)
        observed = (await runtime.poll({instance_id: handle}))[instance_id]
        if observed.state is ObservedState.EXITED:
            break
        await asyncio.sleep(0.05)
    assert observed.state is ObservedState.EXITED
    assert observed.cause is ExitCause.INFRASTRUCTURE
    assert exits == [instance_id]


@pytest.fixture
async def sim_app(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cluster: str
) -> AsyncIterator[FastAPI]:
    """The service on CHROMA_ORCH_RUNTIME=sim (registered as pip installs it, for a
    venv installed before the entry point existed)."""
    register(tmp_path, monkeypatch, "chroma_orch_sim", sim="chroma_orch.runtimes.sim.plugin:build")
    sim = settings(cluster, start_failure_rate=0.0)
    app = create_app(make_settings(database_url, tmp_path / "data", runtime="sim", sim=sim))
    async with app.router.lifespan_context(app):
        yield app


async def test_the_service_runs_an_instance_on_sim_and_proxies_to_it(sim_app: FastAPI) -> None:
    transport = httpx.ASGITransport(app=sim_app)
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    async with httpx.AsyncClient(transport=transport, base_url="http://t", headers=admin) as client:
        _, token = await create_tenant(client, "acme")
        launched = await client.post("/v1/instances", json={"name": "main"}, headers=bearer(token))
        assert launched.status_code == 202, launched.text
        instance_id = launched.json()["instance"]["id"]
        await wait_phase(client, instance_id, "running", headers=bearer(token))
        beat = await client.get(f"/i/{instance_id}/api/v2/heartbeat", headers=bearer(token))
        assert beat.status_code == 200, beat.text
        assert "nanosecond heartbeat" in beat.json()


def test_the_responder_answers_on_the_services_uvloop(cluster: str) -> None:
    """The service runs on uvloop, whose transports are not asyncio.Transport subclasses:
    the responder must answer heartbeats there too (it asserted the class and every
    heartbeat failed, restarting the whole simulated fleet)."""
    import uvloop  # uvicorn[standard] installs it; the service's loop on Linux

    async def beat() -> bool:
        runtime = SimRuntime(settings(cluster, start_failure_rate=0.0))
        handle, endpoint = await running(runtime)
        instance_id = str(handle.data["instance_id"])
        answered = await runtime.heartbeat({instance_id: endpoint}, 2.0)
        await runtime.delete(instance_id, handle, keep_data=False)
        return answered[instance_id]

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        assert runner.run(beat()) is True
