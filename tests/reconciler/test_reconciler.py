"""The reconciler against real PostgreSQL with runtime doubles per failure mode."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, text

from chroma_orch.context import AppContext
from chroma_orch.db import rows
from chroma_orch.db.models import AllocatedPort, Event, Intent
from chroma_orch.db.session import create_engine, create_session_factory
from chroma_orch.reconciler import queue
from chroma_orch.reconciler.decisions import (
    Decision,
    Done,
    Failed,
    RequeueAfter,
    released,
    requeue_time,
)
from chroma_orch.reconciler.instance import InstanceReconciler
from chroma_orch.reconciler.loop import Reconciler
from chroma_orch.runtimes.base import ExitCause, Handle, InstanceSpec
from chroma_orch.settings import ReconcilerSettings, Settings
from tests.helpers import bearer, converge, wait_for
from tests.reconciler.conftest import instance_body, launch
from tests.reconciler.doubles import FakeRuntime


@pytest.fixture
def reconciler(ctx: AppContext, runtime: FakeRuntime, api_settings: Settings) -> Reconciler:
    return Reconciler(ctx.sessions, runtime, _fast(api_settings))


def _fast(settings: Settings, **changes: Any) -> Settings:
    reconciler = settings.reconciler.model_copy(
        update={"backoff_base": 0.01, "backoff_max": 0.05, "restart_limit": 2, **changes}
    )
    local = settings.local.model_copy(update={"start_timeout": 0.5})
    return settings.model_copy(update={"reconciler": reconciler, "local": local})


async def _until_phase(
    client: httpx.AsyncClient,
    token: str,
    instance_id: str,
    phase: str,
    timeout: float = 10.0,
    generation: int | None = None,
) -> None:
    """Wait until the instance is in ``phase`` (for ``generation``, when given)."""

    async def reached() -> bool:
        body = await instance_body(client, token, instance_id)
        settled = generation is None or body["observed_generation"] == generation
        return bool(body["phase"] == phase and settled)

    await wait_for(reached, timeout=timeout)


async def test_launch_converges_to_running_with_events_and_port(
    client: httpx.AsyncClient,
    tenant: str,
    reconciler: Reconciler,
    runtime: FakeRuntime,
    ctx: AppContext,
) -> None:
    instance_id = await launch(client, tenant, "main")
    await converge(reconciler)
    body = await instance_body(client, tenant, instance_id)
    assert body["phase"] == "running"
    assert body["observed_generation"] == body["generation"] == 1
    assert body["endpoint"]["port"] > 0
    assert runtime.starts[instance_id] == 1
    async with ctx.sessions() as session:
        intents = list(await session.scalars(select(Intent)))
        phases = [
            e.after["phase"]
            for e in await session.scalars(select(Event).order_by(Event.seq))
            if e.type == "instance.phase_changed" and e.after
        ]
        ports = list(await session.scalars(select(AllocatedPort.port)))
    assert [i.status for i in intents] == ["succeeded"]
    assert phases == ["starting", "running"]
    assert ports == [body["endpoint"]["port"]]


async def test_stop_start_delete_free_the_port(
    client: httpx.AsyncClient,
    tenant: str,
    reconciler: Reconciler,
    runtime: FakeRuntime,
    ctx: AppContext,
) -> None:
    instance_id = await launch(client, tenant, "main")
    await converge(reconciler)
    await client.post(f"/v1/instances/{instance_id}/stop", headers=bearer(tenant))
    await converge(reconciler)
    body = await instance_body(client, tenant, instance_id)
    assert (body["phase"], body["endpoint"]) == ("stopped", None)
    assert runtime.stops[instance_id] == 1
    await client.post(f"/v1/instances/{instance_id}/start", headers=bearer(tenant))
    await converge(reconciler)
    assert (await instance_body(client, tenant, instance_id))["phase"] == "running"
    await client.delete(f"/v1/instances/{instance_id}", headers=bearer(tenant))
    await converge(reconciler)
    assert (
        await client.get(f"/v1/instances/{instance_id}", headers=bearer(tenant))
    ).status_code == 404
    again = await client.delete(f"/v1/instances/{instance_id}", headers=bearer(tenant))
    assert again.status_code == 202  # a retried delete answers like the first one
    assert again.json()["instance"]["phase"] == "deleted"
    assert again.json()["intent"]["status"] == "succeeded"
    assert runtime.deleted == [instance_id]
    async with ctx.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(AllocatedPort)) == 0
        statuses = set(await session.scalars(select(Intent.status)))
    assert statuses == {"succeeded"}


async def test_slow_start_still_converges(
    client: httpx.AsyncClient, tenant: str, reconciler: Reconciler, runtime: FakeRuntime
) -> None:
    instance_id = await launch(client, tenant, "slow-1")
    await converge(reconciler)
    assert (await instance_body(client, tenant, instance_id))["phase"] == "running"
    assert runtime.starts[instance_id] == 1


async def test_never_ready_fails_with_start_timeout(
    client: httpx.AsyncClient, tenant: str, reconciler: Reconciler, runtime: FakeRuntime
) -> None:
    instance_id = await launch(client, tenant, "never-1")
    await converge(reconciler)
    body = await instance_body(client, tenant, instance_id)
    assert body["phase"] == "failed"
    assert body["failure"]["reason"] == "StartTimeout"
    assert not runtime.servers[instance_id].alive  # the half-started server was stopped


async def test_crash_loop_restarts_then_fails_with_reason(
    client: httpx.AsyncClient,
    tenant: str,
    reconciler: Reconciler,
    runtime: FakeRuntime,
    ctx: AppContext,
) -> None:
    instance_id = await launch(client, tenant, "crash-1")
    for _ in range(40):
        await converge(reconciler)
        await reconciler.observe_once()
        if (await instance_body(client, tenant, instance_id))["phase"] == "failed":
            break
        await asyncio.sleep(0.05)
    body = await instance_body(client, tenant, instance_id)
    assert body["phase"] == "failed", body
    assert body["failure"]["reason"] == "ProcessExited"
    assert "gave up after 2 restarts" in body["failure"]["message"]
    assert runtime.starts[instance_id] == 3
    async with ctx.sessions() as session:
        crashed = await session.scalar(
            select(func.count()).select_from(Event).where(Event.type == "instance.crashed")
        )
        intent = await session.scalar(select(Intent))
    assert crashed == 2
    # The create intent was carried out (the server ran); the crash loop came later.
    assert intent is not None
    assert intent.status == "succeeded"
    # A new start request is a retry with a fresh restart budget.
    retried = await client.post(f"/v1/instances/{instance_id}/start", headers=bearer(tenant))
    assert retried.json()["instance"]["restart_count"] == 0


async def test_refusing_to_stop_is_retried_until_stopped(
    client: httpx.AsyncClient,
    tenant: str,
    reconciler: Reconciler,
    runtime: FakeRuntime,
    ctx: AppContext,
) -> None:
    instance_id = await launch(client, tenant, "stubborn-1")
    await converge(reconciler)
    await client.post(f"/v1/instances/{instance_id}/stop", headers=bearer(tenant))
    await converge(reconciler)
    assert (await instance_body(client, tenant, instance_id))["phase"] == "stopped"
    assert runtime.refusals[instance_id] == 2
    async with ctx.sessions() as session:
        intents = {i.action: i for i in await session.scalars(select(Intent))}
    assert intents["stop"].status == "succeeded"
    assert intents["stop"].attempts == 3


async def test_a_crash_is_noticed_and_restarted(
    client: httpx.AsyncClient, tenant: str, reconciler: Reconciler, runtime: FakeRuntime
) -> None:
    instance_id = await launch(client, tenant, "main")
    await converge(reconciler)
    runtime.crash(instance_id)
    assert await reconciler.observe_once() == 1
    await converge(reconciler)
    body = await instance_body(client, tenant, instance_id)
    assert body["phase"] == "running"
    assert body["restart_count"] == 1
    assert runtime.starts[instance_id] == 2


async def test_restart_replaces_the_server(
    client: httpx.AsyncClient, tenant: str, reconciler: Reconciler, runtime: FakeRuntime
) -> None:
    instance_id = await launch(client, tenant, "main")
    await converge(reconciler)
    first = runtime.servers[instance_id].serial
    await client.post(f"/v1/instances/{instance_id}/restart", headers=bearer(tenant))
    await converge(reconciler)
    assert runtime.servers[instance_id].serial != first
    assert (await instance_body(client, tenant, instance_id))["phase"] == "running"
    assert runtime.starts[instance_id] == 2


async def test_two_replicas_launch_each_instance_once(
    client: httpx.AsyncClient,
    tenant: str,
    ctx: AppContext,
    runtime: FakeRuntime,
    api_settings: Settings,
) -> None:
    ids = [await launch(client, tenant, f"slow-{n}") for n in range(12)]
    replicas = []
    engines = []
    for n in range(2):
        settings = _fast(api_settings, replica_id=f"replica-{n}", concurrency=4, batch_size=2)
        engine = create_engine(
            str(ctx.engine.url.render_as_string(hide_password=False)),
            application_name=f"replica-{n}",
        )
        engines.append(engine)
        replicas.append(Reconciler(create_session_factory(engine), runtime, settings))
    try:
        await asyncio.gather(*(converge(r) for r in replicas))
        for instance_id in ids:
            assert (await instance_body(client, tenant, instance_id))["phase"] == "running"
    finally:
        for engine in engines:
            await engine.dispose()
    assert all(runtime.starts[i] == 1 for i in ids), runtime.starts


async def test_a_dead_owners_lease_is_taken_over_at_once(
    client: httpx.AsyncClient, tenant: str, reconciler: Reconciler, ctx: AppContext
) -> None:
    instance_id = await launch(client, tenant, "main")
    async with ctx.engine.begin() as conn:
        await conn.exec_driver_sql(
            "UPDATE instances SET lease_owner = 'dead-replica', "
            "lease_expires_at = now() + interval '1 hour', next_reconcile_at = NULL"
        )
    await converge(reconciler)
    assert (await instance_body(client, tenant, instance_id))["phase"] == "running"


async def test_a_live_owners_lease_is_respected(
    client: httpx.AsyncClient,
    tenant: str,
    reconciler: Reconciler,
    ctx: AppContext,
    api_settings: Settings,
) -> None:
    await launch(client, tenant, "main")
    owner = api_settings.reconciler.replica_id  # connected: the app's own engine uses it
    async with ctx.engine.begin() as conn:
        await conn.execute(
            text(
                "UPDATE instances SET lease_owner = :owner, "
                "lease_expires_at = now() + interval '1 hour'"
            ),
            {"owner": f"{owner}-other"},
        )
    other = ReconcilerSettings(replica_id=f"{owner}-other")
    engine = create_engine(
        str(ctx.engine.url.render_as_string(hide_password=False)), application_name=other.replica_id
    )
    try:
        async with engine.connect() as conn:  # the other owner is connected
            await conn.exec_driver_sql("SELECT 1")
            assert await reconciler.run_once() == 0
    finally:
        await engine.dispose()


async def test_orphans_are_stopped(reconciler: Reconciler, runtime: FakeRuntime) -> None:
    from chroma_orch.runtimes.base import InstanceSpec

    stray = str(uuid.uuid4())
    await runtime.start(InstanceSpec(stray, str(uuid.uuid4()), "x", 1, port=1))
    assert await reconciler.collect_orphans() == 1
    assert not runtime.servers[stray].alive


async def test_the_loops_run_and_stop(
    client: httpx.AsyncClient, tenant: str, reconciler: Reconciler
) -> None:
    await reconciler.start()
    try:
        instance_id = await launch(client, tenant, "main")
        reconciler.wake()
        await _until_phase(client, tenant, instance_id, "running")
    finally:
        await reconciler.stop()


async def test_wait_answers_once_running_and_times_out_otherwise(
    client: httpx.AsyncClient, tenant: str, reconciler: Reconciler
) -> None:
    instance_id = await launch(client, tenant, "slow-1")
    early = await client.get(
        f"/v1/instances/{instance_id}/wait", params={"timeout": 0.1}, headers=bearer(tenant)
    )
    assert early.status_code == 200
    assert early.json()["phase"] == "pending"
    await reconciler.start()
    try:
        reconciler.wake()
        waited = await client.get(
            f"/v1/instances/{instance_id}/wait", params={"timeout": 10}, headers=bearer(tenant)
        )
    finally:
        await reconciler.stop()
    body = waited.json()
    assert (body["phase"], body["observed_generation"]) == ("running", 1)
    bad = await client.get(
        f"/v1/instances/{instance_id}/wait", params={"timeout": 999}, headers=bearer(tenant)
    )
    assert bad.status_code == 422


async def test_new_instances_each_get_their_own_port(
    client: httpx.AsyncClient,
    tenant: str,
    reconciler: Reconciler,
    runtime: FakeRuntime,
    ctx: AppContext,
) -> None:
    """The runtime reserves a free port for each new instance's server (none that
    another instance holds; ``db.ports``), so every server starts once, on it."""
    ids = [await launch(client, tenant, f"p{n}") for n in range(6)]
    await converge(reconciler)
    async with ctx.sessions() as session:
        reserved = dict(
            (await session.execute(select(AllocatedPort.instance_id, AllocatedPort.port))).all()
        )
    assert len(set(reserved.values())) == len(reserved) == 6
    for instance_id in ids:
        body = await instance_body(client, tenant, instance_id)
        assert body["phase"] == "running"
        assert runtime.starts[instance_id] == 1
        assert body["endpoint"]["port"] == reserved[uuid.UUID(instance_id)]


async def test_the_claim_leases_the_instance_and_starts_its_intents(
    client: httpx.AsyncClient, tenant: str, ctx: AppContext
) -> None:
    """The claim is one statement: the instance leased to the claimer and no longer
    due, its open intent in progress with one attempt more; nothing else."""
    instance_id = await launch(client, tenant, "claimed-1")
    owner = ctx.settings.reconciler.replica_id  # its connections are there: a live owner
    async with ctx.sessions() as session:
        before = await rows.fetch_instance(session, uuid.UUID(instance_id))
        claimed = await queue.claim_due(session, owner, timedelta(seconds=30), 10)
        again = await queue.claim_due(session, "other", timedelta(seconds=30), 10)
        intent = await session.scalar(
            select(Intent).where(Intent.instance_id == uuid.UUID(instance_id))
        )
    assert before is not None
    [after] = claimed
    assert again == []  # leased, and no longer due
    assert after.lease_owner == owner
    assert after.next_reconcile_at is None
    assert after.lease_expires_at is not None
    assert (after.phase, after.handle) == (before.phase, before.handle)
    assert intent is not None
    assert (intent.status, intent.attempts) == ("in_progress", 1)


async def test_a_request_made_while_the_instance_is_worked_on_is_taken_up_after(
    client: httpx.AsyncClient,
    tenant: str,
    ctx: AppContext,
    runtime: FakeRuntime,
    api_settings: Settings,
) -> None:
    """The stop arrives while the start is in flight (its notification finds the
    instance leased); the pass that ends the start sees the instance due again and
    the reconciler takes it up at once, not at the next resync."""
    settings = _fast(api_settings, resync_interval=60.0, observe_interval=60.0)
    reconciler = Reconciler(ctx.sessions, runtime, settings)
    await reconciler.start()
    try:
        instance_id = await launch(client, tenant, "slow-1")
        reconciler.wake()
        await _until_phase(client, tenant, instance_id, "starting", timeout=5)
        stopped = await client.post(f"/v1/instances/{instance_id}/stop", headers=bearer(tenant))
        assert stopped.status_code == 202
        await _until_phase(client, tenant, instance_id, "stopped", timeout=5, generation=2)
    finally:
        await reconciler.stop()


async def test_notifications_name_the_phase_so_waiters_wake_only_for_theirs(
    client: httpx.AsyncClient, tenant: str, reconciler: Reconciler, ctx: AppContext
) -> None:
    instance_id = await launch(client, tenant, "main")
    with (
        ctx.hub.watch(instance_id, {"running"}) as running,
        ctx.hub.watch(instance_id, {"stopped"}) as stopped,
        ctx.hub.watch(instance_id) as anything,
    ):
        await converge(reconciler)  # starting (with the claim), then running
        await asyncio.wait_for(running.wait(), timeout=10)
        assert anything.is_set()
        assert not stopped.is_set()


async def _one_pass(reconciler: Reconciler, instance_id: str) -> Decision:
    """Claim the instance and reconcile it once; what the pass decided."""
    async with reconciler.sessions() as session:
        claimed = await queue.claim_due(session, reconciler.owner, reconciler.lease, 10)
        await session.commit()
    (inst,) = [i for i in claimed if str(i.id) == instance_id]
    worker = InstanceReconciler(
        inst,
        runtime=reconciler.runtime,
        sessions=reconciler.sessions,
        settings=reconciler.settings,
        store=reconciler.store,
    )
    return await worker.reconcile()


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("fine-1", Done(released=True)),  # running: converged, the last write gave the lease back
        ("never-1", Failed("StartTimeout")),  # terminal for this generation
    ],
)
async def test_a_pass_returns_what_it_decided(
    client: httpx.AsyncClient, tenant: str, reconciler: Reconciler, name: str, expected: Decision
) -> None:
    instance_id = await launch(client, tenant, name)
    assert await _one_pass(reconciler, instance_id) == expected


async def test_a_crash_within_the_budget_is_requeued_after_a_backoff(
    client: httpx.AsyncClient, tenant: str, reconciler: Reconciler, runtime: FakeRuntime
) -> None:
    instance_id = await launch(client, tenant, "fine-2")
    assert await _one_pass(reconciler, instance_id) == Done(released=True)
    runtime.crash(instance_id)
    await reconciler.observe_once()  # marks the instance due
    decision = await _one_pass(reconciler, instance_id)
    assert isinstance(decision, RequeueAfter)
    assert decision.seconds > 0
    assert requeue_time(decision) is not None
    assert not released(decision)


# -- failure classes and the restart budget --------------------------------------


async def _crash_and_restart(
    client: httpx.AsyncClient,
    tenant: str,
    reconciler: Reconciler,
    runtime: FakeRuntime,
    instance_id: str,
    cause: ExitCause = ExitCause.CRASH,
) -> dict[str, Any]:
    """Crash the instance's server (of class ``cause``) and converge again."""
    runtime.crash(instance_id, cause=cause)
    assert await reconciler.observe_once() == 1
    await converge(reconciler)
    return await instance_body(client, tenant, instance_id)


async def test_platform_initiated_exits_restart_at_once_without_counting(
    client: httpx.AsyncClient,
    tenant: str,
    reconciler: Reconciler,
    runtime: FakeRuntime,
    ctx: AppContext,
) -> None:
    instance_id = await launch(client, tenant, "main")
    await converge(reconciler)
    for _ in range(4):  # twice the restart limit
        body = await _crash_and_restart(
            client, tenant, reconciler, runtime, instance_id, ExitCause.INFRASTRUCTURE
        )
        assert (body["phase"], body["restart_count"]) == ("running", 0)
    assert runtime.starts[instance_id] == 5
    async with ctx.sessions() as session:
        events = list(await session.scalars(select(Event).order_by(Event.seq)))
    interrupted = [e.after for e in events if e.type == "instance.interrupted"]
    assert [(a or {}).get("retry_in") for a in interrupted] == [0.0] * 4
    assert not [e for e in events if e.type == "instance.crashed"]


async def test_a_fresh_start_token_per_attempt_even_without_counting(
    client: httpx.AsyncClient, tenant: str, reconciler: Reconciler, runtime: FakeRuntime
) -> None:
    tokens: list[str] = []
    start = runtime.start

    async def recording(spec: InstanceSpec) -> Handle:
        tokens.append(spec.start_token)
        return await start(spec)

    runtime.start = recording  # type: ignore[method-assign]
    instance_id = await launch(client, tenant, "main")
    await converge(reconciler)
    await _crash_and_restart(
        client, tenant, reconciler, runtime, instance_id, ExitCause.INFRASTRUCTURE
    )
    await _crash_and_restart(client, tenant, reconciler, runtime, instance_id)
    assert len(tokens) == len(set(tokens)) == 3  # ECS would hand back the old task


async def test_no_capacity_backs_off_growing_with_the_reason_shown_then_starts(
    client: httpx.AsyncClient, tenant: str, ctx: AppContext, runtime: FakeRuntime
) -> None:
    settings = _fast(ctx.settings, capacity_backoff_base=1.0, capacity_backoff_max=3.0)
    reconciler = Reconciler(ctx.sessions, runtime, settings)
    instance_id = await launch(client, tenant, "full-1")  # 3 refusals > restart_limit 2
    decisions = []
    for _ in range(4):
        decisions.append(await _one_pass(reconciler, instance_id))
        body = await instance_body(client, tenant, instance_id)
        if isinstance(decisions[-1], RequeueAfter):
            assert body["phase"] == "starting"
            assert body["failure"]["reason"] == "CapacityUnavailable"
        await _due_now(ctx, instance_id)
    assert decisions == [RequeueAfter(1.0), RequeueAfter(2.0), RequeueAfter(3.0), Done(True)]
    body = await instance_body(client, tenant, instance_id)
    assert (body["phase"], body["restart_count"], body["failure"]) == ("running", 0, None)
    async with ctx.sessions() as session:
        waits = list(
            await session.scalars(
                select(Event).where(Event.type == "instance.waiting_for_capacity")
            )
        )
    assert [(w.after or {}).get("reason") for w in waits] == ["CapacityUnavailable"] * 3


async def test_the_budget_refills_after_a_healthy_period(
    client: httpx.AsyncClient, tenant: str, runtime: FakeRuntime, ctx: AppContext
) -> None:
    period = 600.0
    reconciler = Reconciler(ctx.sessions, runtime, _fast(ctx.settings, restart_budget_reset=period))
    instance_id = await launch(client, tenant, "main")
    await converge(reconciler)
    body = await _crash_and_restart(client, tenant, reconciler, runtime, instance_id)
    body = await _crash_and_restart(client, tenant, reconciler, runtime, instance_id)
    assert (body["phase"], body["restart_count"]) == ("running", 2)  # the limit: 2
    await _running_since(ctx, instance_id, seconds_ago=period + 1)
    body = await _crash_and_restart(client, tenant, reconciler, runtime, instance_id)
    assert (body["phase"], body["restart_count"]) == ("running", 1)  # a fresh budget
    await _running_since(ctx, instance_id, seconds_ago=period - 60)  # within the period
    body = await _crash_and_restart(client, tenant, reconciler, runtime, instance_id)
    assert (body["phase"], body["restart_count"]) == ("running", 2)
    body = await _crash_and_restart(client, tenant, reconciler, runtime, instance_id)
    assert body["phase"] == "failed"
    assert "gave up after 2 restarts" in body["failure"]["message"]


async def _due_now(ctx: AppContext, instance_id: str) -> None:
    """Skip a backoff: the instance is due at once and unleased (what the loop, which
    ``_one_pass`` bypasses, and the wait would end in)."""
    async with ctx.sessions() as session:
        await session.execute(
            text(
                "UPDATE instances SET next_reconcile_at = now(), lease_owner = NULL, "
                "lease_expires_at = NULL WHERE id = :id"
            ),
            {"id": uuid.UUID(instance_id)},
        )
        await session.commit()


async def _running_since(ctx: AppContext, instance_id: str, seconds_ago: float) -> None:
    """The server has been running for ``seconds_ago`` (instead of waiting that long)."""
    async with ctx.sessions() as session:
        await session.execute(
            text(
                "UPDATE instances SET phase_changed_at = now() - make_interval(secs => :s) "
                "WHERE id = :id AND phase = 'running'"
            ),
            {"id": uuid.UUID(instance_id), "s": seconds_ago},
        )
        await session.commit()


async def test_a_fleet_larger_than_one_liveness_pass_is_observed_in_rounds(
    client: httpx.AsyncClient, tenant: str, reconciler: Reconciler, runtime: FakeRuntime
) -> None:
    """Each liveness pass polls ``observe_batch`` servers at most, the next pass after
    the last id the one before polled: a crash beyond the first batch is noticed too
    (without the cursor, the same first batch came back every pass)."""
    ids = [await launch(client, tenant, f"fleet-{n}") for n in range(3)]
    await converge(reconciler)
    reconciler.observe_batch = 1
    # the last one a round reaches; gone without the runtime saying so (found by polls)
    runtime.servers[max(ids, key=uuid.UUID)].alive = False
    assert [await reconciler.observe_once() for _ in range(3)] == [0, 0, 1]


async def test_an_exit_the_runtime_reports_is_due_at_once(
    client: httpx.AsyncClient, tenant: str, reconciler: Reconciler, runtime: FakeRuntime
) -> None:
    """A server the runtime says exited makes its instance due at once, wherever the
    liveness round is: before, the exit woke the liveness pass, which polled the next
    batch of its round (at 10,000 instances, 5,000 servers, 2.5 s of ECS's describe
    budget) and found the exit only in the batch that held it. Only live instances
    nobody works on are marked."""
    ids = sorted([await launch(client, tenant, f"fleet-{n}") for n in range(3)], key=uuid.UUID)
    await converge(reconciler)
    reconciler.observe_batch = 1
    runtime.crash(ids[-1])  # the exit callback
    runtime.crash(ids[-1])  # heard twice: marked once
    assert await reconciler.mark_exited_due() == 1
    assert await reconciler.mark_exited_due() == 0  # nothing heard since
    await converge(reconciler)
    assert (await instance_body(client, tenant, ids[-1]))["restart_count"] == 1
