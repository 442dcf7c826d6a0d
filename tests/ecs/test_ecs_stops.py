"""Failure classes on ECS: AWS-initiated stops restart without counting, capacity
and pull throttles wait with a visible reason, crashes count (tests/ecs/aws_stops.py
puts tasks in the states real ECS reports)."""

from __future__ import annotations

import itertools

import pytest
from sqlalchemy import select

from chroma_orch.db.models import Event
from chroma_orch.runtimes.base import ExitCause
from chroma_orch.runtimes.ecs.stops import classify_run_failures, classify_stop
from chroma_orch.settings import ReconcilerSettings
from tests.ecs import aws_stops
from tests.ecs.conftest import CLUSTER, REGION, EcsService, cluster_tasks, task_of
from tests.helpers import bearer, create_tenant, wait_for, wait_phase


@pytest.fixture
def reconciler_config() -> ReconcilerSettings:
    from tests.ecs.conftest import reconciler_settings

    return reconciler_settings(
        restart_limit=1, capacity_backoff_base=0.05, capacity_backoff_max=0.2
    )


async def _events(service: EcsService, instance_id: str) -> list[Event]:
    async with service.app.state.ctx.sessions() as session:
        rows = await session.scalars(select(Event).order_by(Event.seq))
        return [e for e in rows if str(e.instance_id) == instance_id]


async def _running(service: EcsService, name: str) -> str:
    _, token = await create_tenant(service.http, "acme")
    created = await service.http.post("/v1/instances", json={"name": name}, headers=bearer(token))
    instance_id: str = created.json()["instance"]["id"]
    await wait_phase(service.http, instance_id, "running")
    return instance_id


async def test_aws_initiated_stops_restart_without_using_the_budget(
    ecs_service: EcsService, moto_url: str
) -> None:
    instance_id = await _running(ecs_service, "main")
    task = await task_of(moto_url, instance_id)
    # restart_limit is 1: three AWS-initiated stops would fail a counting reconciler
    for stop in (aws_stops.retire, aws_stops.spot_interrupt, aws_stops.retire):
        stop(REGION, CLUSTER, task)
        task = await task_of(moto_url, instance_id, not_arn=task)
        body = await wait_phase(ecs_service.http, instance_id, "running")
    assert body["restart_count"] == 0
    interrupted = [e.after for e in await _events(ecs_service, instance_id)
                   if e.type == "instance.interrupted"]  # fmt: skip
    reasons = [str((after or {}).get("reason")) for after in interrupted]
    assert reasons == ["ServiceSchedulerInitiated", "SpotInterruption", "ServiceSchedulerInitiated"]


async def test_a_pull_rate_limit_waits_with_a_visible_reason_and_does_not_count(
    ecs_service: EcsService, moto_url: str
) -> None:
    instance_id = await _running(ecs_service, "main")
    task = await task_of(moto_url, instance_id)
    for _ in range(3):  # more than restart_limit
        aws_stops.pull_throttled(REGION, CLUSTER, task)
        task = await task_of(moto_url, instance_id, not_arn=task)
    body = await wait_phase(ecs_service.http, instance_id, "running")
    assert body["restart_count"] == 0
    waits = [e.after or {} for e in await _events(ecs_service, instance_id)
             if e.type == "instance.waiting_for_capacity"]  # fmt: skip
    assert [w["reason"] for w in waits] == ["ImagePullThrottled"] * 3
    assert "toomanyrequests" in str(waits[0]["message"])
    # Each wait starts a streak (the server ran in between) or doubles the one before
    # (it had not: behind the AWS-behaviour layer a new task is invisible for a while).
    retries = [w["retry_in"] for w in waits]
    assert retries[0] == 0.05
    for before, after in itertools.pairwise(retries):
        assert after in (0.05, before * 2)


async def test_no_capacity_keeps_starting_with_the_reason_shown_until_placed(
    ecs_service: EcsService, moto_url: str
) -> None:
    _, token = await create_tenant(ecs_service.http, "acme")
    with aws_stops.no_capacity(times=4) as refused:  # more than restart_limit
        created = await ecs_service.http.post(
            "/v1/instances", json={"name": "main"}, headers=bearer(token)
        )
        instance_id = created.json()["instance"]["id"]

        async def waiting() -> dict[str, object] | None:
            got = await ecs_service.http.get(f"/v1/instances/{instance_id}")
            body: dict[str, object] = got.json()
            failure = body.get("failure") or {}
            assert isinstance(failure, dict)
            shown = failure.get("reason") == "CapacityUnavailable"
            return body if shown and body["phase"] == "starting" else None

        await wait_for(waiting)
        body = await wait_phase(ecs_service.http, instance_id, "running")
    assert refused[0] == 4
    assert body["restart_count"] == 0
    assert body["failure"] is None
    assert len(await cluster_tasks(moto_url)) == 1


def test_stop_codes_map_onto_failure_classes() -> None:
    def cause(code: str | None, reason: str = "", container: str = "") -> ExitCause:
        task = {"stopCode": code, "stoppedReason": reason,
                "containers": [{"name": "chroma", "reason": container}]}  # fmt: skip
        return classify_stop(task)[1]

    assert cause("SpotInterruption") is ExitCause.INFRASTRUCTURE
    assert cause("TerminationNotice") is ExitCause.INFRASTRUCTURE
    assert cause("ServiceSchedulerInitiated") is ExitCause.INFRASTRUCTURE
    assert cause(None, aws_stops.MAINTENANCE) is ExitCause.INFRASTRUCTURE
    assert cause("TaskFailedToStart", aws_stops.DOCKER_HUB_LIMIT) is ExitCause.CAPACITY
    assert cause("TaskFailedToStart", "", aws_stops.DOCKER_HUB_LIMIT) is ExitCause.CAPACITY
    assert cause("TaskFailedToStart", aws_stops.NO_CAPACITY) is ExitCause.CAPACITY
    denied = "CannotPullContainerError: pull access denied"
    assert cause("TaskFailedToStart", denied) is ExitCause.CRASH
    assert cause("EssentialContainerExited", "Essential container in task exited") is (
        ExitCause.CRASH
    )
    assert cause("UserInitiated", "stopped by an operator") is ExitCause.CRASH
    assert classify_run_failures([{"reason": aws_stops.NO_CAPACITY}]) == (
        "CapacityUnavailable",
        ExitCause.CAPACITY,
    )
    assert classify_run_failures([{"reason": "MISSING"}])[1] is ExitCause.CRASH
