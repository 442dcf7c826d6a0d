"""Starts that wait on the platform rather than crash: a task AWS stops again and
again before it ever ran is relaunched after a short, growing backoff; Fargate's
concurrent-task quota waits with the reason ``TaskQuotaReached``; a delete does not
trust a listing that may not show a task launched moments ago (the AWS-behaviour
layer keeps new tasks invisible for a while, as ECS's eventual consistency does),
and a stop or a delete that finds such a task waits until ECS has stopped it."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from chroma_orch.db.models import Event, Instance
from chroma_orch.reconciler.loop import Reconciler
from chroma_orch.runtimes.base import ExitCause, Handle, InstanceSpec, ObservedState
from chroma_orch.runtimes.ecs.stops import classify_run_failures
from chroma_orch.settings import EcsSettings, ReconcilerSettings
from tests.ecs import aws_stops
from tests.ecs.aws_behaviour import TASK_QUOTA_REACHED, AwsBehaviour
from tests.ecs.conftest import (
    CLUSTER,
    REGION,
    EcsService,
    cluster_tasks,
    instance_of,
    reconciler_settings,
    task_of,
)
from tests.helpers import bearer, converge, create_tenant, instance_row, wait_for, wait_phase


@pytest.fixture
def reconciler_config() -> ReconcilerSettings:
    return reconciler_settings(capacity_backoff_base=0.05, capacity_backoff_max=0.2)


async def _events(service: EcsService, instance_id: str, kind: str) -> list[dict[str, Any]]:
    async with service.app.state.ctx.sessions() as session:
        rows = await session.scalars(select(Event).where(Event.type == kind).order_by(Event.seq))
        return [e.after or {} for e in rows if str(e.instance_id) == instance_id]


async def _create(service: EcsService) -> str:
    _, token = await create_tenant(service.http, "acme")
    created = await service.http.post("/v1/instances", json={"name": "main"}, headers=bearer(token))
    return str(created.json()["instance"]["id"])


async def test_tasks_stopped_by_aws_before_they_ran_are_relaunched_with_a_backoff(
    ecs_service: EcsService, moto_url: str, aws: AwsBehaviour
) -> None:
    aws.invisible_for = 1.0  # time to stop each new task before the service sees it run
    instance_id = await _create(ecs_service)
    task = None
    for _ in range(3):
        task = await task_of(moto_url, instance_id, not_arn=task)
        aws_stops.retire(REGION, CLUSTER, task)
    body = await wait_phase(ecs_service.http, instance_id, "running", timeout=60)

    assert body["restart_count"] == 0  # not counted: AWS stopped them
    waits = [e["retry_in"] for e in await _events(ecs_service, instance_id, "instance.interrupted")]
    base = ecs_service.app.state.settings.reconciler.backoff_base
    assert waits == [base, base * 2, base * 4]  # was [0, 0, 0]: relaunched at once


async def test_the_fargate_task_quota_waits_with_its_reason(
    ecs_service: EcsService, moto_url: str, aws: AwsBehaviour
) -> None:
    aws.task_quota = 0  # the account runs as many tasks as it may

    instance_id = await _create(ecs_service)

    async def waiting() -> dict[str, Any] | None:
        body: dict[str, Any] = (await ecs_service.http.get(f"/v1/instances/{instance_id}")).json()
        failure = body.get("failure") or {}
        return body if failure.get("reason") == "TaskQuotaReached" else None

    body = await wait_for(waiting)
    assert body["phase"] == "starting"
    assert TASK_QUOTA_REACHED.split(".")[0] in body["failure"]["message"]
    await wait_for(lambda: _waited(ecs_service, instance_id, 3))  # more than restart_limit
    aws.task_quota = None  # a task stopped elsewhere
    body = await wait_phase(ecs_service.http, instance_id, "running", timeout=60)
    assert body["restart_count"] == 0
    assert [instance_of(t) for t in await cluster_tasks(moto_url)] == [instance_id]


async def _waited(service: EcsService, instance_id: str, times: int) -> bool:
    return len(await _events(service, instance_id, "instance.waiting_for_capacity")) >= times


def test_the_task_quota_is_classed_as_capacity() -> None:
    assert classify_run_failures([{"reason": TASK_QUOTA_REACHED}]) == (
        "TaskQuotaReached",
        ExitCause.CAPACITY,
    )


_ENDINGS = [
    ("POST", "/v1/instances/{}/stop", "stopped"),
    ("DELETE", "/v1/instances/{}", "deleted"),
]


class TestNoStartRecorded:
    """A replica recorded "starting", launched, and died before saving the handle."""

    @pytest.fixture
    def reconciler_config(self) -> ReconcilerSettings:
        return ReconcilerSettings(enabled=False)  # the test drives passes itself

    @pytest.fixture
    async def ecs_settings(self, ecs_settings: EcsSettings) -> EcsSettings:
        return ecs_settings.model_copy(update={"visibility_grace": 3.0, "launch_budget": 2.0})

    async def test_a_delete_finds_a_task_launched_moments_ago(
        self, ecs_service: EcsService, moto_url: str, aws: AwsBehaviour
    ) -> None:
        """The task is not visible yet when the delete lists the instance's tasks."""
        aws.invisible_for = 1.5  # shorter than the grace, as ECS's window is
        instance_id, _ = await _launched_unrecorded(ecs_service)
        deleted = await ecs_service.http.delete(f"/v1/instances/{instance_id}")
        assert deleted.status_code == 202

        await _until_phase(ecs_service, _passes(ecs_service), instance_id, "deleted")

        assert await cluster_tasks(moto_url) == []  # was: left running, unseen

    @pytest.mark.parametrize(("method", "path", "final"), _ENDINGS)
    async def test_the_end_waits_until_the_found_task_is_gone(
        self,
        ecs_service: EcsService,
        moto_url: str,
        aws: AwsBehaviour,
        method: str,
        path: str,
        final: str,
    ) -> None:
        """A stop or a delete finds the task in the listing once the launch window is
        over, and ECS takes its time to stop it (SIGTERM, then up to the container's
        stopTimeout): the instance is "stopped" or "deleted" only once the task is
        gone. Before, it was marked so as soon as StopTask was sent: on EFS a start
        could then mount the data while the found task still ran on it, or a delete's
        cleanup empty the data while it still wrote."""
        aws.invisible_for = 1.5
        aws.stop_takes = 3.0
        instance_id, found = await _launched_unrecorded(ecs_service)
        asked = await ecs_service.http.request(method, path.format(instance_id))
        assert asked.status_code == 202
        reconciler = _passes(ecs_service)

        await converge(reconciler)
        seen = (await ecs_service.runtime.poll({instance_id: found}))[instance_id]
        assert seen.state is ObservedState.STOPPING  # StopTask sent, the task on its way out
        assert (await _row(ecs_service, instance_id)).phase == "stopping"  # was: already final

        await _until_phase(ecs_service, reconciler, instance_id, final)
        seen = (await ecs_service.runtime.poll({instance_id: found}))[instance_id]
        assert seen.state is ObservedState.EXITED
        assert await cluster_tasks(moto_url) == []


async def _launched_unrecorded(service: EcsService) -> tuple[str, Handle]:
    """An instance "starting" (its ``launch_by`` as a start records it) whose task was
    launched and never recorded; its id and the task's handle."""
    instance_id = await _create(service)
    async with service.app.state.ctx.sessions() as session:
        row = await session.get(Instance, uuid.UUID(instance_id))
        assert row is not None
        row.phase, row.phase_changed_at = "starting", datetime.now(UTC)
        row.launch_by = row.phase_changed_at + timedelta(seconds=service.settings.launch_budget)
        spec = InstanceSpec(instance_id, str(row.tenant_id), "main", row.generation,
                            start_token=f"{row.id.hex}-{row.generation}-0")  # fmt: skip
        await session.commit()
    return instance_id, await service.runtime.start(spec)


async def _until_phase(
    service: EcsService, reconciler: Reconciler, instance_id: str, phase: str
) -> None:
    """Run passes until the instance is in ``phase`` (a pass that stopped a task ends
    while it stops: the liveness pass wakes the instance once it is gone)."""

    async def reached() -> bool:
        await reconciler.observe_once()
        await converge(reconciler)
        return (await _row(service, instance_id)).phase == phase

    await wait_for(reached, timeout=20)


def _passes(service: EcsService) -> Reconciler:
    """A reconciler the test drives, with short backoffs."""
    settings = service.app.state.settings.model_copy(
        update={"reconciler": ReconcilerSettings(backoff_base=0.01, backoff_max=0.05)}
    )
    return Reconciler(service.app.state.ctx.sessions, service.runtime, settings)


async def _row(service: EcsService, instance_id: str) -> Instance:
    row = await instance_row(service.app.state.ctx, instance_id)
    assert row is not None
    return row
