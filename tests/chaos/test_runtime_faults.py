"""Runtime faults: a Chroma server that crash-loops ends failed with a reason once its
restart budget is spent, while instances launched beside it come up; an ECS
throttle storm slows convergence down but loses nothing."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import psutil
import pytest

from chroma_orch.app import create_app
from chroma_orch.settings import EcsSettings
from tests.chaos.cluster import (
    allocated_ports,
    assert_local_invariants,
    instance_rows,
    intent_rows,
    kill_servers,
    wait_converged,
)
from tests.chaos.ecs_replicas import ecs_replicas, running_tasks_by_instance
from tests.conftest import ADMIN_TOKEN, make_settings
from tests.e2e.service import chroma_processes
from tests.ecs.aws_behaviour import AwsBehaviour
from tests.ecs.conftest import CallLog, reconciler_settings
from tests.helpers import bearer, create_tenant, wait_for, wait_phase

RESTART_LIMIT = 2


@pytest.fixture
async def local_app(database_url: str, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    data_dir = tmp_path / "data"
    settings = make_settings(
        database_url, data_dir, reconciler=reconciler_settings(restart_limit=RESTART_LIMIT)
    )
    app = create_app(settings)
    try:
        async with app.router.lifespan_context(app):
            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app),
                base_url="http://testserver",
                headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
                timeout=30,
            ) as http:
                yield http
    finally:
        kill_servers(data_dir)


async def _kill_whenever_up(data_dir: Path, instance_id: str, kills: list[int]) -> None:
    """The crash loop: SIGKILL the instance's server every time one appears."""
    while True:
        for proc in chroma_processes(data_dir).get(instance_id, []):
            try:
                proc.kill()
                kills.append(proc.pid)
            except psutil.Error:
                pass
        await asyncio.sleep(0.05)


async def test_crash_loop_fails_after_budget_without_starving_others(
    local_app: httpx.AsyncClient, database_url: str, tmp_path: Path
) -> None:
    http, data_dir = local_app, tmp_path / "data"
    _, token = await create_tenant(http, "acme")
    auth = bearer(token)
    created = await http.post("/v1/instances", json={"name": "crashy"}, headers=auth)
    crashy = str(created.json()["instance"]["id"])
    kills: list[int] = []
    killer = asyncio.create_task(_kill_whenever_up(data_dir, crashy, kills))
    try:
        others = []
        for n in range(4):  # launched at the same time as the crash loop runs
            answer = await http.post("/v1/instances", json={"name": f"ok{n}"}, headers=auth)
            others.append(str(answer.json()["instance"]["id"]))
        for instance_id in others:
            await wait_phase(http, instance_id, "running", timeout=60)
        failed = await wait_phase(http, crashy, "failed", timeout=60)
    finally:
        killer.cancel()
        await asyncio.gather(killer, return_exceptions=True)

    assert failed["failure"]["reason"] == "ProcessExited", failed
    assert f"gave up after {RESTART_LIMIT} restarts" in failed["failure"]["message"], failed
    assert len(set(kills)) >= RESTART_LIMIT + 1  # every attempt of the budget was spent
    intents = await intent_rows(database_url)
    crashy_intents = [i for i in intents.values() if str(i["instance_id"]) == crashy]
    assert [i["status"] for i in crashy_intents] == ["failed"]
    assert "ProcessExited" in str(crashy_intents[0]["error"])
    for instance_id in others:  # never disturbed: no restart, one server each
        body = (await http.get(f"/v1/instances/{instance_id}")).json()
        assert body["phase"] == "running"
    processes = chroma_processes(data_dir)
    assert crashy not in processes
    assert sorted(processes) == sorted(others)
    assert all(len(p) == 1 for p in processes.values())
    ports = await allocated_ports(database_url)
    assert sorted(ports) == sorted(others)  # the failed instance's port was given back
    rows = await instance_rows(database_url)
    assert_local_invariants({i: r for i, r in rows.items() if i != crashy}, ports, data_dir)

    # the failure is for this generation only: a new start is a fresh budget
    assert (await http.post(f"/v1/instances/{crashy}/start", headers=auth)).status_code == 202
    await wait_phase(http, crashy, "running", timeout=60)


@dataclass
class Storm(CallLog):
    """Throttles a seeded ``rate`` of ECS calls (before they reach moto) while on."""

    rng: random.Random = field(default_factory=lambda: random.Random(4242))
    on: bool = False
    rate: float = 0.8
    throttled: Counter[str] = field(default_factory=Counter)

    def before(self, model: Any, **_: Any) -> Any:
        operation = str(model.name)
        self.counts[operation] += 1
        if self.on and self.rng.random() < self.rate:
            self.throttled[operation] += 1
            error = {"Code": "ThrottlingException", "Message": "Rate exceeded"}
            meta = {"HTTPStatusCode": 400}
            return SimpleNamespace(status_code=400), {"Error": error, "ResponseMetadata": meta}
        self.reached[operation] += 1
        return None

    async def blow(self, calls: int) -> None:
        """Throttle until ``calls`` more calls were refused, then calm down."""
        target = sum(self.throttled.values()) + calls
        self.on = True
        try:
            await wait_for(lambda: _at_least(self, target), timeout=60, interval=0.05)
        finally:
            self.on = False


async def _at_least(storm: Storm, target: int) -> bool:
    return sum(storm.throttled.values()) >= target


async def test_throttle_storm_slows_but_loses_nothing(
    database_url: str,
    tmp_path: Path,
    ecs_settings: EcsSettings,
    moto_url: str,
    aws: AwsBehaviour,
) -> None:
    storm = Storm()
    async with ecs_replicas(database_url, tmp_path, ecs_settings, storm, 2) as clients:
        _, token = await create_tenant(clients[0], "acme")
        auth = bearer(token)
        storm.on = True
        created = await asyncio.gather(
            *(
                clients[k % 2].post("/v1/instances", json={"name": f"i{k}"}, headers=auth)
                for k in range(8)
            )
        )
        ids = [str(c.json()["instance"]["id"]) for c in created]
        await storm.blow(60)
        rows = await wait_converged(database_url, timeout=90)
        assert await running_tasks_by_instance(moto_url) == dict.fromkeys(ids, 1)
        # One launch each. A pass that failed after its RunTask (a throttled
        # DescribeTasks) sends the same clientToken again and gets the same task back.
        assert aws.launched == 8, (aws.launched, storm.reached)
        assert all(rows[i].restart_count == 0 for i in ids)  # throttling is no crash

        storm.on = True
        answers = await asyncio.gather(
            *(clients[0].post(f"/v1/instances/{i}/stop", headers=auth) for i in ids[:3]),
            *(clients[1].delete(f"/v1/instances/{i}", headers=auth) for i in ids[3:5]),
            clients[1].post(f"/v1/instances/{ids[5]}/restart", headers=auth),
        )
        assert [a.status_code for a in answers] == [202] * 6
        await storm.blow(60)
        rows = await wait_converged(database_url, timeout=90)
        assert await running_tasks_by_instance(moto_url) == dict.fromkeys(ids[5:], 1)
        assert aws.launched == 9, (aws.launched, storm.reached)  # + the restart
        statuses = {i["status"] for i in (await intent_rows(database_url)).values()}
        assert statuses <= {"succeeded", "superseded"}, statuses
        assert storm.throttled["RunTask"] + storm.throttled["StopTask"] > 0, storm.throttled
