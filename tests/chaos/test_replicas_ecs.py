"""Two and three replicas on one database with the ``ecs`` runtime on one moto: every
start reaches ECS exactly once (RunTask calls counted where moto sees them), and the
cluster ends with one task per running instance."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from chroma_orch.settings import EcsSettings
from tests.chaos.cluster import event_seqs, gaps, intent_rows, wait_converged
from tests.chaos.ecs_replicas import ecs_replicas, running_tasks_by_instance
from tests.ecs.conftest import CallLog
from tests.helpers import bearer, create_tenant


@pytest.mark.parametrize("count", [2, 3])
async def test_one_run_task_per_start(
    database_url: str, tmp_path: Path, ecs_settings: EcsSettings, moto_url: str, count: int
) -> None:
    calls = CallLog()
    async with ecs_replicas(database_url, tmp_path, ecs_settings, calls, count) as clients:
        _, token = await create_tenant(clients[0], "acme")
        auth = bearer(token)
        created = await asyncio.gather(
            *(
                clients[k % count].post("/v1/instances", json={"name": f"i{k}"}, headers=auth)
                for k in range(6)
            )
        )
        assert [c.status_code for c in created] == [202] * 6
        ids = [str(c.json()["instance"]["id"]) for c in created]
        await wait_converged(database_url)
        assert await running_tasks_by_instance(moto_url) == dict.fromkeys(ids, 1)

        answers = await asyncio.gather(
            clients[1].post(f"/v1/instances/{ids[0]}/stop", headers=auth),
            clients[0].post(f"/v1/instances/{ids[0]}/stop", headers=auth),  # a repeat
            clients[1].post(f"/v1/instances/{ids[1]}/stop", headers=auth),
            clients[-1].post(f"/v1/instances/{ids[2]}/restart", headers=auth),
            clients[0].post(f"/v1/instances/{ids[3]}/restart", headers=auth),
            clients[1].delete(f"/v1/instances/{ids[4]}", headers=auth),
        )
        assert [a.status_code for a in answers] == [202] * 6, [a.text for a in answers]
        await wait_converged(database_url)
        start = await clients[-1].post(f"/v1/instances/{ids[1]}/start", headers=auth)
        assert start.status_code == 202
        rows = await wait_converged(database_url)

        running = sorted(i for i in ids if rows[i].phase == "running")
        assert running == sorted([ids[1], ids[2], ids[3], ids[5]])
        assert rows[ids[4]].phase == "deleted"
        assert rows[ids[0]].phase == "stopped"
        assert await running_tasks_by_instance(moto_url) == dict.fromkeys(running, 1)
        # 6 launches + 2 restarts + 1 start; the repeated stop changed nothing
        assert calls.reached["RunTask"] == 9, calls.reached
        statuses = {i["status"] for i in (await intent_rows(database_url)).values()}
        assert statuses <= {"succeeded", "superseded"}, statuses
        assert gaps(await event_seqs(database_url)) == []
