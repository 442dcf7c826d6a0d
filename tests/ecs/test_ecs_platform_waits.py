"""Starts that wait on the platform rather than crash: a task AWS stops again and
again before it ever ran is relaunched after a short, growing backoff; Fargate's
concurrent-task quota waits with the reason ``TaskQuotaReached``; a delete does not
trust a listing that may not show a task launched moments ago (the AWS-behaviour
layer keeps new tasks invisible for a while, as ECS's eventual consistency does)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from chroma_orch.db.models import Event, Instance
from chroma_orch.reconciler.loop import Reconciler
from chroma_orch.runtimes.base import ExitCause, InstanceSpec, ObservedState
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
from tests.helpers import bearer, converge, create_tenant, wait_for, wait_phase


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


class TestDelete:
    @pytest.fixture
    def reconciler_config(self) -> ReconcilerSettings:
        return ReconcilerSettings(enabled=False)  # the test drives passes itself

    @pytest.fixture
    async def ecs_settings(self, ecs_settings: EcsSettings) -> EcsSettings:
        return ecs_settings.model_copy(update={"visibility_grace": 3.0, "launch_budget": 2.0})

    async def test_a_delete_finds_a_task_launched_moments_ago(
        self, ecs_service: EcsService, moto_url: str, aws: AwsBehaviour
    ) -> None:
        """A replica recorded "starting", launched, and died before saving the handle;
        the task is not visible yet when the delete lists the instance's tasks."""
        aws.invisible_for = 1.5  # shorter than the grace, as ECS's window is
        instance_id = await _create(ecs_service)
        async with ecs_service.app.state.ctx.sessions() as session:
            row = await session.get(Instance, uuid.UUID(instance_id))
            assert row is not None
            row.phase, row.phase_changed_at = "starting", datetime.now(UTC)
            row.launch_by = row.phase_changed_at + timedelta(seconds=2.0)  # as it records
            spec = InstanceSpec(instance_id, str(row.tenant_id), "main", row.generation,
                                start_token=f"{row.id.hex}-{row.generation}-0")  # fmt: skip
            await session.commit()
        await ecs_service.runtime.start(spec)
        deleted = await ecs_service.http.delete(f"/v1/instances/{instance_id}")
        assert deleted.status_code == 202

        settings = ecs_service.app.state.settings.model_copy(
            update={"reconciler": ReconcilerSettings(backoff_base=0.01, backoff_max=0.05)}
        )
        await converge(
            Reconciler(ecs_service.app.state.ctx.sessions, ecs_service.runtime, settings)
        )

        assert await cluster_tasks(moto_url) == []  # was: left running, unseen
        async with ecs_service.app.state.ctx.sessions() as session:
            row = await session.get(Instance, uuid.UUID(instance_id))
            assert row is not None
            assert row.phase == "deleted"


class TestStopOfATaskNoStartRecorded:
    @pytest.fixture
    def reconciler_config(self) -> ReconcilerSettings:
        return ReconcilerSettings(enabled=False)  # the test drives passes itself

    @pytest.fixture
    async def ecs_settings(self, ecs_settings: EcsSettings) -> EcsSettings:
        return ecs_settings.model_copy(update={"visibility_grace": 1.0, "launch_budget": 1.0})

    async def test_the_stop_waits_until_the_found_task_is_gone(
        self, ecs_service: EcsService, moto_url: str, aws: AwsBehaviour
    ) -> None:
        """A replica recorded "starting", launched, and died before saving the handle.
        The stop finds the task in the listing once the launch window is over, and ECS
        takes its time to stop it (SIGTERM, then up to the container's stopTimeout):
        the instance is "stopped" only once the task is gone. Before, it was marked
        stopped as soon as StopTask was sent, and on EFS a start could then mount the
        data while the found task still ran on it."""
        aws.invisible_for = 0.2
        aws.stop_takes = 3.0
        instance_id = await _create(ecs_service)
        async with ecs_service.app.state.ctx.sessions() as session:
            row = await session.get(Instance, uuid.UUID(instance_id))
            assert row is not None
            row.phase, row.phase_changed_at = "starting", datetime.now(UTC)
            row.launch_by = row.phase_changed_at + timedelta(seconds=1.0)  # as it records
            spec = InstanceSpec(instance_id, str(row.tenant_id), "main", row.generation,
                                start_token=f"{row.id.hex}-{row.generation}-0")  # fmt: skip
            await session.commit()
        stray = await ecs_service.runtime.start(spec)
        stopped = await ecs_service.http.post(f"/v1/instances/{instance_id}/stop")
        assert stopped.status_code == 202
        reconciler = Reconciler(
            ecs_service.app.state.ctx.sessions,
            ecs_service.runtime,
            ecs_service.app.state.settings.model_copy(
                update={"reconciler": ReconcilerSettings(backoff_base=0.01, backoff_max=0.05)}
            ),
        )

        await converge(reconciler)
        found = (await ecs_service.runtime.poll({instance_id: stray}))[instance_id]
        assert found.state is ObservedState.STOPPING  # StopTask sent, the task on its way out
        assert (await _row(ecs_service, instance_id)).phase == "stopping"  # was: "stopped"

        async def gone_and_stopped() -> bool:
            await reconciler.observe_once()  # the liveness pass wakes it once the task is gone
            await converge(reconciler)
            return (await _row(ecs_service, instance_id)).phase == "stopped"

        await wait_for(gone_and_stopped, timeout=15)
        after = (await ecs_service.runtime.poll({instance_id: stray}))[instance_id]
        assert after.state is ObservedState.EXITED
        assert await cluster_tasks(moto_url) == []


async def _row(service: EcsService, instance_id: str) -> Instance:
    async with service.app.state.ctx.sessions() as session:
        row: Instance | None = await session.get(Instance, uuid.UUID(instance_id))
        assert row is not None
        return row
