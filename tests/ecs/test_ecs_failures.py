"""Tasks that stop on their own, and an ECS API that throttles and fails."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from moto.backends import get_backend
from sqlalchemy import select

from chroma_orch.db.models import Event
from chroma_orch.settings import ReconcilerSettings
from tests.ecs.aws_behaviour import AwsBehaviour
from tests.ecs.conftest import (
    CLUSTER,
    REGION,
    CallLog,
    EcsService,
    cluster_tasks,
    instance_of,
    reconciler_settings,
    task_of,
)
from tests.helpers import bearer, create_tenant, wait_phase

ACCOUNT = "123456789012"


@pytest.fixture
def reconciler_config() -> ReconcilerSettings:
    return reconciler_settings(restart_limit=1)


def _stop_in_moto(task_arn: str, stop_code: str, reason: str) -> None:
    """What ECS does when a task dies: STOPPED, desired STOPPED, a stop code and reason.
    (moto has no way to make a task fail, so the test sets the state as ECS would.)"""
    task = get_backend("ecs")[ACCOUNT][REGION].tasks[CLUSTER][task_arn]
    task.last_status = "STOPPED"
    task.desired_status = "STOPPED"
    task.__dict__["stop_code"] = stop_code  # moto's Task has no such field; ECS has
    task.stopped_reason = reason


async def test_task_exits_restart_policy_then_failed(
    ecs_service: EcsService, moto_url: str
) -> None:
    http = ecs_service.http
    _, token = await create_tenant(http, "acme")
    created = await http.post("/v1/instances", json={"name": "main"}, headers=bearer(token))
    instance_id = created.json()["instance"]["id"]
    await wait_phase(http, instance_id, "running")
    first = await task_of(moto_url, instance_id)

    _stop_in_moto(first, "EssentialContainerExited", "Essential container in task exited")
    second = await task_of(moto_url, instance_id, not_arn=first)  # restarted (limit 1)
    await wait_phase(http, instance_id, "running")

    _stop_in_moto(second, "TaskFailedToStart", "CannotPullContainerError: pull access denied")
    failed = await wait_phase(http, instance_id, "failed")
    assert failed["failure"]["reason"] == "TaskFailedToStart"
    assert "CannotPullContainerError" in failed["failure"]["message"]
    assert await cluster_tasks(moto_url) == []

    async with ecs_service.app.state.ctx.sessions() as session:
        events = (await session.scalars(select(Event).order_by(Event.seq))).all()
    crashed = [e.after for e in events if e.type == "instance.crashed"]
    assert crashed
    assert crashed[0] is not None
    assert crashed[0]["reason"] == "EssentialContainerExited"
    assert "Essential container" in crashed[0]["message"]
    assert any(
        e.type == "instance.failed" and (e.after or {}).get("reason") == "TaskFailedToStart"
        for e in events
    )


@pytest.fixture
def calls() -> CallLog:
    return CallLog(fail_first=4, lose_first_run_task_answer=True)


async def test_throttling_and_5xx_converge_with_one_task_each(
    ecs_service: EcsService, moto_url: str, aws: AwsBehaviour
) -> None:
    http = ecs_service.http
    _, token = await create_tenant(http, "acme")
    ids: list[str] = []
    for n in range(6):
        created = await http.post("/v1/instances", json={"name": f"i{n}"}, headers=bearer(token))
        ids.append(created.json()["instance"]["id"])
    await asyncio.gather(*(wait_phase(http, i, "running", timeout=60) for i in ids))

    tasks = await cluster_tasks(moto_url)
    assert sorted(instance_of(t) or "" for t in tasks) == sorted(ids)  # one task each
    calls = ecs_service.calls
    assert aws.launched == len(ids)  # the lost answer's retry got its task back
    # At least that retry was replayed; a pass that failed later (an injected
    # DescribeTasks failure) resends its clientToken too and is answered the same way.
    assert aws.replayed >= 1
    assert calls.counts["RunTask"] >= len(ids) + 4 + 1  # injected failures, the lost answer
    for operation in ("DescribeTasks", "RegisterTaskDefinition"):
        assert calls.counts[operation] > 4, operation
    instances: list[dict[str, Any]] = [(await http.get(f"/v1/instances/{i}")).json() for i in ids]
    assert {i["endpoint"]["port"] for i in instances} == {8000}
