"""The rollout loop against real PostgreSQL: rolling restarts through a real
reconciler on the runtime double, and fleet upgrades whose guarded upgrades the
test moves itself (``instance_upgrades`` rows), the loop reading their phase."""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from chroma_orch.context import AppContext
from chroma_orch.db.models import Event, Instance, InstanceUpgrade, RolloutMember
from chroma_orch.loops import Loops
from chroma_orch.reconciler.loop import Reconciler
from chroma_orch.reconciler.rollouts import RolloutRunner
from chroma_orch.runtimes.base import Runtime
from chroma_orch.runtimes.local.settings import ChromaVersionLauncher
from chroma_orch.settings import Settings
from tests.helpers import bearer, converge
from tests.reconciler.doubles import FakeRuntime


@pytest.fixture
def api_settings(api_settings: Settings) -> Settings:
    """The API's local runtime also knows Chroma 1.5.8 (its servers never start here:
    the reconciler drives the runtime double), so instances launched on the installed
    version can be upgraded to it."""
    versions = {"1.5.8": ChromaVersionLauncher(python=sys.executable)}
    local = api_settings.local.model_copy(update={"chroma_versions": versions})
    return api_settings.model_copy(update={"local": local})


@pytest.fixture
def reconciler(ctx: AppContext, runtime: FakeRuntime, api_settings: Settings) -> Reconciler:
    # resync: this reconciler is not on the app's notification listener (the app's
    # own is off), so it looks for work often instead of waiting to be told
    reconciler = api_settings.reconciler.model_copy(
        update={
            "backoff_base": 0.01,
            "backoff_max": 0.05,
            "restart_limit": 1,
            "resync_interval": 0.05,
        }
    )
    local = api_settings.local.model_copy(update={"start_timeout": 0.5})
    fast = api_settings.model_copy(update={"reconciler": reconciler, "local": local})
    return Reconciler(ctx.sessions, runtime, fast)


async def open_upgrade(
    session: AsyncSession,
    instance: Instance,
    chroma_version: str,
    runtime: Runtime,
    *,
    rollout_id: uuid.UUID | None = None,
) -> InstanceUpgrade:
    """Opens the upgrade as ``domain.upgrades.request_upgrade`` records it: a pending
    row (the test moves its phase, standing in for the upgrade's own reconciler)."""
    upgrade = InstanceUpgrade(
        id=uuid.uuid4(),
        instance_id=instance.id,
        tenant_id=instance.tenant_id,
        rollout_id=rollout_id,
        phase="pending",
        from_spec=instance.spec,
        to_spec={**instance.spec, "chroma_version": chroma_version},
    )
    session.add(upgrade)
    await session.flush()
    return upgrade


@pytest.fixture
def runner(ctx: AppContext, runtime: FakeRuntime) -> RolloutRunner:
    return RolloutRunner(ctx.sessions, ctx.policy, runtime, upgrade=open_upgrade)


async def _launch(client: httpx.AsyncClient, token: str, names: list[str]) -> list[str]:
    ids = []
    for name in names:
        response = await client.post("/v1/instances", json={"name": name}, headers=bearer(token))
        assert response.status_code == 202, response.text
        ids.append(response.json()["instance"]["id"])
    return ids


async def _members(ctx: AppContext, rollout_id: str) -> list[RolloutMember]:
    async with ctx.sessions() as session:
        found = await session.scalars(
            select(RolloutMember)
            .where(RolloutMember.rollout_id == uuid.UUID(rollout_id))
            .order_by(RolloutMember.wave, RolloutMember.instance_id)
        )
        return list(found)


async def _events(ctx: AppContext, kind: str) -> list[dict[str, Any]]:
    async with ctx.sessions() as session:
        found = await session.scalars(
            select(Event).where(Event.type == f"rollout.{kind}").order_by(Event.seq)
        )
        return [{**(event.after or {}), "tenant_id": event.tenant_id} for event in found]


async def _drive(
    client: httpx.AsyncClient,
    runner: RolloutRunner,
    reconciler: Reconciler,
    rollout_id: str,
    states: tuple[str, ...] = ("succeeded", "halted"),
    timeout: float = 60,
) -> dict[str, Any]:
    """Step the rollout and reconcile its instances until it reaches one of ``states``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        await runner.run_once()
        await converge(reconciler)
        body: dict[str, Any] = (await client.get(f"/v1/rollouts/{rollout_id}")).json()
        if body["state"] in states:
            return body
        await asyncio.sleep(0.02)
    raise AssertionError(f"rollout {rollout_id} did not reach {states}")


async def _max_active(ctx: AppContext, rollout_id: str) -> int:
    """The most members restarting at once, replayed from the member events."""
    active: set[str] = set()
    most = 0
    for change in await _events(ctx, "member_changed"):
        if change["rollout_id"] != rollout_id:
            continue
        if change["state"] == "active":
            active.add(change["instance_id"])
        else:
            active.discard(change["instance_id"])
        most = max(most, len(active))
    return most


async def test_waves_advance_in_order_after_the_pause(
    client: httpx.AsyncClient,
    tenant: str,
    ctx: AppContext,
    runner: RolloutRunner,
    reconciler: Reconciler,
) -> None:
    ids = await _launch(client, tenant, [f"i{n}" for n in range(5)])
    await converge(reconciler)
    body = {"waves": [20, 60, 100], "pause_seconds": 1, "max_concurrent": 2}
    rollout = (await client.post("/v1/restarts", json=body)).json()
    done = await _drive(client, runner, reconciler, rollout["id"])

    assert done["state"] == "succeeded"
    assert [w["counts"]["succeeded"] for w in done["waves"]] == [1, 2, 2]
    members = await _members(ctx, rollout["id"])
    for wave in (1, 2):
        previous = [m for m in members if m.wave == wave - 1]
        current = [m for m in members if m.wave == wave]
        last_done = max(m.completed_at for m in previous if m.completed_at)
        first_start = min(m.started_at for m in current if m.started_at)
        assert (first_start - last_done).total_seconds() >= 1, wave  # the pause
    started = [e["wave"] for e in await _events(ctx, "wave_started")]
    assert started == [0, 1, 2]
    states = [e["state"] for e in await _events(ctx, "state_changed")]
    assert states == ["running", "succeeded"]
    assert all(e["tenant_id"] is None for e in await _events(ctx, "member_changed"))
    for instance_id in ids:  # each restarted once, and running at that generation
        instance = (await client.get(f"/v1/instances/{instance_id}", headers=bearer(tenant))).json()
        assert instance["generation"] == 2
        assert instance["observed_generation"] == 2
        assert instance["phase"] == "running"
    assert {m.target_generation for m in members} == {2}


async def test_a_rolling_restart_keeps_to_max_concurrent(
    client: httpx.AsyncClient,
    tenant: str,
    ctx: AppContext,
    runner: RolloutRunner,
    reconciler: Reconciler,
) -> None:
    await _launch(client, tenant, [f"slow-{n}" for n in range(6)])
    await converge(reconciler)
    rollout = (await client.post("/v1/restarts", json={"max_concurrent": 2})).json()
    await reconciler.start()
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            await runner.run_once()
            body = (await client.get(f"/v1/rollouts/{rollout['id']}")).json()
            if body["state"] == "succeeded":
                break
            await asyncio.sleep(0.02)
    finally:
        await reconciler.stop()
    assert body["state"] == "succeeded"
    assert await _max_active(ctx, rollout["id"]) == 2  # used, never exceeded
    members = await _members(ctx, rollout["id"])  # the rows agree: a sweep over them
    changes = sorted(
        [(m.started_at, 1) for m in members] + [(m.completed_at, -1) for m in members],
        key=lambda change: (change[0], change[1]),  # an end before a start at one instant
    )
    running, most = 0, 0
    for _, delta in changes:
        running += delta
        most = max(most, running)
    assert most == 2


async def test_the_service_start_cap_holds_during_a_rollout(
    client: httpx.AsyncClient,
    tenant: str,
    ctx: AppContext,
    runtime: FakeRuntime,
    reconciler: Reconciler,
) -> None:
    await _launch(client, tenant, [f"i{n}" for n in range(3)])
    await converge(reconciler)
    capped = RolloutRunner(
        ctx.sessions,
        ctx.policy.__class__(**{**ctx.policy.__dict__, "max_concurrent_starts": 1}),
        runtime,
        open_upgrade,
    )
    rollout = (await client.post("/v1/restarts", json={"max_concurrent": 3})).json()
    await capped.run_once()  # no reconciler pass: the started one stays on its way up
    members = await _members(ctx, rollout["id"])
    assert [m.state for m in members].count("active") == 1
    await capped.run_once()
    assert [m.state for m in await _members(ctx, rollout["id"])].count("active") == 1
    await converge(reconciler)
    await capped.run_once()
    assert [m.state for m in await _members(ctx, rollout["id"])].count("succeeded") == 1


async def test_a_wave_over_its_error_budget_halts_the_rollout(
    client: httpx.AsyncClient,
    tenant: str,
    ctx: AppContext,
    runner: RolloutRunner,
) -> None:
    ids = await _launch(client, tenant, [f"i{n}" for n in range(4)])
    body = {"chroma_version": "1.5.8", "waves": [50, 100], "max_concurrent": 4}
    rollout = (await client.post("/v1/upgrades", json=body)).json()
    await runner.run_once()
    members = await _members(ctx, rollout["id"])
    first = [m for m in members if m.wave == 0]
    assert [m.state for m in first] == ["active", "active"]
    assert all(m.state == "waiting" for m in members if m.wave == 1)
    async with ctx.engine.begin() as conn:
        await conn.execute(
            update(InstanceUpgrade)
            .where(InstanceUpgrade.id == first[0].upgrade_id)
            .values(phase="rolled_back", failure_message="collection counts differ")
        )
        await conn.execute(
            update(InstanceUpgrade)
            .where(InstanceUpgrade.id == first[1].upgrade_id)
            .values(phase="succeeded")
        )
    await runner.run_once()
    halted = (await client.get(f"/v1/rollouts/{rollout['id']}")).json()
    assert halted["state"] == "halted"
    assert "wave 0" in halted["message"]
    assert "error budget is 0" in halted["message"]
    assert halted["waves"][0]["counts"]["rolled_back"] == 1
    assert halted["waves"][1]["counts"]["waiting"] == 2
    for _ in range(3):  # halted: later waves never start
        assert await runner.run_once() == []
    async with ctx.sessions() as session:
        upgraded = set(
            await session.scalars(
                select(InstanceUpgrade.instance_id).where(
                    InstanceUpgrade.rollout_id == uuid.UUID(rollout["id"])
                )
            )
        )
    assert upgraded == {m.instance_id for m in first}
    assert len(ids) == 4
    rolled = [m for m in await _members(ctx, rollout["id"]) if m.state == "rolled_back"]
    assert rolled[0].message == "collection counts differ"


async def test_a_rollback_within_the_budget_goes_on(
    client: httpx.AsyncClient,
    tenant: str,
    ctx: AppContext,
    runner: RolloutRunner,
) -> None:
    ids = await _launch(client, tenant, ["a", "b", "c"])
    async with ctx.engine.begin() as conn:  # one already runs the target version
        await conn.execute(
            update(Instance)
            .where(Instance.id == uuid.UUID(ids[0]))
            .values(spec={"chroma_version": "1.5.8"})
        )
    stopped = (await _launch(client, tenant, ["d"]))[0]
    assert (await client.post(f"/v1/instances/{stopped}/stop", headers=bearer(tenant))).is_success
    body = {"chroma_version": "1.5.8", "error_budget": 1, "max_concurrent": 4}
    rollout = (await client.post("/v1/upgrades", json=body)).json()
    await runner.run_once()
    members = {str(m.instance_id): m for m in await _members(ctx, rollout["id"])}
    assert members[ids[0]].state == "succeeded"
    assert members[ids[0]].upgrade_id is None  # no upgrade needed
    assert members[stopped].state == "skipped"  # an upgrade is probed on a running server
    assert members[stopped].upgrade_id is None
    async with ctx.engine.begin() as conn:
        await conn.execute(
            update(InstanceUpgrade)
            .where(InstanceUpgrade.id == members[ids[1]].upgrade_id)
            .values(phase="rolled_back")
        )
        await conn.execute(
            update(InstanceUpgrade)
            .where(InstanceUpgrade.id == members[ids[2]].upgrade_id)
            .values(phase="cancelled")
        )
    await runner.run_once()
    done = (await client.get(f"/v1/rollouts/{rollout['id']}")).json()
    assert done["state"] == "succeeded"
    counts = done["waves"][0]["counts"]
    assert (counts["succeeded"], counts["rolled_back"], counts["skipped"]) == (1, 1, 2)


async def test_a_failed_restart_counts_against_the_budget(
    client: httpx.AsyncClient,
    tenant: str,
    ctx: AppContext,
    runner: RolloutRunner,
    reconciler: Reconciler,
) -> None:
    await _launch(client, tenant, ["never-a", "ok-b"])  # never-*: never answers
    await converge(reconciler)
    rollout = (await client.post("/v1/restarts", json={"max_concurrent": 2})).json()
    done = await _drive(client, runner, reconciler, rollout["id"])
    assert done["state"] == "halted"
    assert done["waves"][0]["counts"]["failed"] == 1
    assert done["waves"][0]["counts"]["succeeded"] == 1


async def test_resumes_after_the_loop_stops_mid_wave(
    client: httpx.AsyncClient,
    tenant: str,
    ctx: AppContext,
    runtime: FakeRuntime,
    reconciler: Reconciler,
) -> None:
    await _launch(client, tenant, [f"slow-{n}" for n in range(4)])
    await converge(reconciler)
    rollout = (await client.post("/v1/restarts", json={"waves": [50, 100]})).json()
    await reconciler.start()
    try:
        first = Loops()  # the first service's loop ...
        first.every(
            "rollouts",
            RolloutRunner(ctx.sessions, ctx.policy, runtime, open_upgrade).run_once,
            0.05,
        )
        async with first:
            deadline = time.monotonic() + 30
            while not any(m.state != "waiting" for m in await _members(ctx, rollout["id"])):
                assert time.monotonic() < deadline
                await asyncio.sleep(0.02)
        mid = await _members(ctx, rollout["id"])  # ... stopped mid-wave
        assert any(m.state == "waiting" for m in mid if m.wave == 0) or any(
            m.state == "active" for m in mid
        )
        second = Loops()  # a restarted service: a new runner, only the database in common
        second.every(
            "rollouts",
            RolloutRunner(ctx.sessions, ctx.policy, runtime, open_upgrade).run_once,
            0.05,
        )
        async with second:
            deadline = time.monotonic() + 60
            while (await client.get(f"/v1/rollouts/{rollout['id']}")).json()[
                "state"
            ] != "succeeded":
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
    finally:
        await reconciler.stop()
    members = await _members(ctx, rollout["id"])
    assert {m.state for m in members} == {"succeeded"}
    async with ctx.sessions() as session:
        generations = set(
            await session.scalars(
                select(Instance.generation).where(Instance.id.in_([m.instance_id for m in members]))
            )
        )
    assert generations == {2}  # each restarted exactly once, across both loops


async def test_a_paused_rollout_is_not_stepped(
    client: httpx.AsyncClient,
    tenant: str,
    ctx: AppContext,
    runner: RolloutRunner,
    reconciler: Reconciler,
) -> None:
    await _launch(client, tenant, ["a", "b"])
    await converge(reconciler)
    rollout = (await client.post("/v1/restarts", json={})).json()
    assert (await client.post(f"/v1/rollouts/{rollout['id']}/pause")).status_code == 200
    assert await runner.run_once() == []
    assert {m.state for m in await _members(ctx, rollout["id"])} == {"waiting"}
    assert (await client.post(f"/v1/rollouts/{rollout['id']}/resume")).status_code == 200
    done = await _drive(client, runner, reconciler, rollout["id"])
    assert done["state"] == "succeeded"


async def test_a_member_deleted_meanwhile_is_skipped(
    client: httpx.AsyncClient,
    tenant: str,
    ctx: AppContext,
    runner: RolloutRunner,
    reconciler: Reconciler,
) -> None:
    ids = await _launch(client, tenant, ["a", "b"])
    await converge(reconciler)
    rollout = (await client.post("/v1/restarts", json={"max_concurrent": 2})).json()
    deleted = await client.delete(f"/v1/instances/{ids[0]}", headers=bearer(tenant))
    assert deleted.status_code == 202
    done = await _drive(client, runner, reconciler, rollout["id"])
    assert done["state"] == "succeeded"
    members = {str(m.instance_id): m for m in await _members(ctx, rollout["id"])}
    assert members[ids[0]].state == "skipped"
    assert members[ids[1]].state == "succeeded"
