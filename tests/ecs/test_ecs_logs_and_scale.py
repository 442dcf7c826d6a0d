"""Logs come back from CloudWatch Logs; observation stays batched at scale."""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any

import pytest
from sqlalchemy import func, select

from chroma_orch.db.models import Instance
from chroma_orch.runtimes.base import Handle
from chroma_orch.runtimes.ecs.runtime import EcsRuntime
from tests.ecs.aws_behaviour import AwsBehaviour
from tests.ecs.conftest import EcsService, aws_client, cluster_tasks, instance_of
from tests.helpers import bearer, create_tenant, wait_for, wait_phase


async def _put_lines(moto_url: str, group: str, stream: str, lines: list[str]) -> None:
    async with aws_client(moto_url, "logs") as logs:
        try:
            await logs.create_log_stream(logGroupName=group, logStreamName=stream)
        except logs.exceptions.ResourceAlreadyExistsException:
            pass
        now = int(time.time() * 1000)
        events = [{"timestamp": now + n, "message": line} for n, line in enumerate(lines)]
        await logs.put_log_events(logGroupName=group, logStreamName=stream, logEvents=events)


async def test_logs_of_an_ecs_instance(ecs_service: EcsService, moto_url: str) -> None:
    http = ecs_service.http
    _, token = await create_tenant(http, "acme")
    created = await http.post("/v1/instances", json={"name": "main"}, headers=bearer(token))
    instance_id = created.json()["instance"]["id"]
    await wait_phase(http, instance_id, "running")
    (task,) = await cluster_tasks(moto_url)
    settings = ecs_service.settings
    # what the awslogs driver writes: PREFIX/CONTAINER/TASK_ID in the configured group
    stream = (
        f"{settings.log_stream_prefix}/{settings.container_name}/{task['taskArn'].split('/')[-1]}"
    )
    empty = await http.get(f"/v1/instances/{instance_id}/logs", params={"tail": 5})
    assert empty.status_code == 200
    assert empty.json()["lines"] == []

    await _put_lines(moto_url, settings.log_group, stream, ["one", "two", "three"])
    logs = await http.get(f"/v1/instances/{instance_id}/logs", params={"tail": 2})
    assert logs.status_code == 200, logs.text
    assert logs.json()["lines"] == ["two", "three"]

    handle = Handle(None, {"task_arn": task["taskArn"], "instance_id": instance_id})
    follow = ecs_service.runtime.follow_logs(instance_id, handle, 1)
    assert await anext(follow) == ["three"]
    await _put_lines(moto_url, settings.log_group, stream, ["four"])
    assert await asyncio.wait_for(anext(follow), timeout=10) == ["four"]
    await follow.aclose()  # type: ignore[attr-defined]

    # Stopped, and read by a service that has nothing in memory (as after a restart):
    # the last task's logs still come back (a failed task's logs say why it failed).
    await http.post(f"/v1/instances/{instance_id}/stop", headers=bearer(token))
    await wait_phase(http, instance_id, "stopped")
    ctx = ecs_service.app.state.ctx
    fresh = EcsRuntime(settings)
    saved, ctx.runtime = ctx.runtime, fresh
    try:
        after = await http.get(f"/v1/instances/{instance_id}/logs", params={"tail": 2})
    finally:
        ctx.runtime = saved
        await fresh.aclose()
    assert after.json()["lines"] == ["three", "four"]


SCALE = 250


@pytest.fixture
def service_overrides() -> dict[str, Any]:
    return {"max_instances_per_tenant": SCALE}


async def test_many_instances_observed_in_batches(
    ecs_service: EcsService, moto_url: str, aws: AwsBehaviour
) -> None:
    http = ecs_service.http
    _, token = await create_tenant(http, "big")

    async def launch(n: int) -> str:
        created = await http.post("/v1/instances", json={"name": f"i{n}"}, headers=bearer(token))
        assert created.status_code == 202, created.text
        return str(created.json()["instance"]["id"])

    ids = await asyncio.gather(*(launch(n) for n in range(SCALE)))

    async def all_running() -> bool:
        async with ecs_service.app.state.ctx.sessions() as session:
            running = await session.scalar(
                select(func.count()).select_from(Instance).where(Instance.phase == "running")
            )
        return bool(running == SCALE)

    await wait_for(all_running, timeout=120, interval=0.5)
    tasks = await cluster_tasks(moto_url)
    assert sorted(instance_of(t) or "" for t in tasks) == sorted(ids)
    assert aws.launched == SCALE
    # every RunTask launched, but those AWS refused at its rate (retried)
    assert ecs_service.calls.reached["RunTask"] == SCALE + aws.throttled["RunTask"]

    reconciler = ecs_service.reconciler
    # Quiet: every background loop of the app stops (the reconciler's and the others),
    # so no pass but the counted one calls DescribeTasks.
    await ecs_service.app.state.ctx.loops.__aexit__(None, None, None)
    await reconciler.abandon()

    async def one_pass() -> int:
        before = ecs_service.calls.counts["DescribeTasks"]
        assert await reconciler.observe_once() == 0
        # 0 calls: the pass skipped, the stopped observer's transaction still held the lock
        return ecs_service.calls.counts["DescribeTasks"] - before

    used = await wait_for(one_pass, timeout=30, interval=0.2)
    assert 1 <= used <= math.ceil(SCALE / 100)
