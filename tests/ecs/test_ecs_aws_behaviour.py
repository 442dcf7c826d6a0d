"""The runtime against AWS behaviour moto lacks (tests/ecs/aws_behaviour.py):
eventual consistency after RunTask, clientToken idempotency and ConflictException,
ListTasks with startedBy as its only filter (per-attempt cleanup tokens: test_ecs_efs.py)."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import select

from chroma_orch.db.models import Event, Instance
from chroma_orch.runtimes.base import Handle, InstanceSpec, ObservedState, ServerSpec
from chroma_orch.runtimes.ecs.runtime import EcsRuntime
from chroma_orch.settings import EcsSettings
from tests.ecs.aws_behaviour import AwsBehaviour
from tests.ecs.conftest import EcsService, cluster_tasks, instance_of
from tests.helpers import bearer, create_tenant, wait_for, wait_phase


@pytest.fixture
async def runtime(ecs_settings: EcsSettings) -> AsyncIterator[EcsRuntime]:
    runtime = EcsRuntime(ecs_settings)
    try:
        yield runtime
    finally:
        await runtime.aclose()


def _spec(instance_id: str | None = None, server: ServerSpec | None = None) -> InstanceSpec:
    instance_id = instance_id or str(uuid.uuid4())
    return InstanceSpec(
        instance_id=instance_id,
        tenant_id=str(uuid.uuid4()),
        name="main",
        generation=1,
        server=server or ServerSpec(),
        start_token=f"{uuid.UUID(instance_id).hex}-1-0",
    )


async def test_a_task_not_visible_yet_is_starting_then_found(
    runtime: EcsRuntime, aws: AwsBehaviour
) -> None:
    aws.invisible_for = 1.0
    handle = await runtime.start(_spec())

    key = str(handle.data["instance_id"])
    assert (await runtime.poll({key: handle}))[key].state is ObservedState.STARTING
    ready = await runtime.wait_ready(handle, timeout=30)  # backs off until it shows
    assert ready.state is ObservedState.RUNNING
    assert aws.seen["DescribeTasks"] >= 2


async def test_a_task_missing_after_the_grace_period_has_exited(
    ecs_settings: EcsSettings, aws: AwsBehaviour
) -> None:
    aws.invisible_for = 3600.0
    runtime = EcsRuntime(ecs_settings.model_copy(update={"storage": "ephemeral"}))
    try:
        handle = await runtime.start(_spec())
        old = {**handle.data, "launched_at": time.time() - runtime.settings.visibility_grace - 1}
        late = Handle(handle.generation, old)

        key = str(handle.data["instance_id"])
        observed = (await runtime.poll({key: late}))[key]
        assert observed.state is ObservedState.EXITED
        assert observed.reason == "TaskMissing"
    finally:
        await runtime.aclose()


async def test_a_missing_task_whose_volume_is_attached_is_not_gone(
    runtime: EcsRuntime, aws: AwsBehaviour
) -> None:
    """With EBS, a task DescribeTasks does not know whose volume is still attached
    may still be writing to it: stopping, not exited (no restart on older data)."""
    aws.invisible_for = 3600.0
    handle = await runtime.start(_spec())
    old = {**handle.data, "launched_at": time.time() - runtime.settings.visibility_grace - 1}
    key = str(handle.data["instance_id"])
    observed = (await runtime.poll({key: Handle(handle.generation, old)}))[key]
    assert observed.state is ObservedState.STOPPING
    assert "in-use" in (observed.message or "")


async def test_an_instance_whose_task_shows_late_starts_once(
    ecs_service: EcsService, moto_url: str, aws: AwsBehaviour
) -> None:
    aws.invisible_for = 3.0  # longer than the reconciler's quick wait for readiness
    _, token = await create_tenant(ecs_service.http, "acme")
    created = await ecs_service.http.post(
        "/v1/instances", json={"name": "main"}, headers=bearer(token)
    )
    instance_id = created.json()["instance"]["id"]
    await wait_phase(ecs_service.http, instance_id, "running", timeout=60)

    assert [instance_of(t) for t in await cluster_tasks(moto_url)] == [instance_id]
    assert aws.launched == 1
    async with ecs_service.app.state.ctx.sessions() as session:
        row = await session.get(Instance, uuid.UUID(instance_id))
        events = (await session.scalars(select(Event.type))).all()
    assert row is not None
    assert row.restart_count == 0
    assert "instance.crashed" not in events


async def test_a_task_stopped_before_it_is_visible_is_stopped(
    runtime: EcsRuntime, moto_url: str, aws: AwsBehaviour
) -> None:
    aws.invisible_for = 3600.0
    handle = await runtime.start(_spec())

    await runtime.stop(handle)

    assert await cluster_tasks(moto_url) == []  # moto (the truth) wants it stopped
    assert aws.seen["StopTask"] == 1


async def test_a_reused_token_with_other_parameters_adopts_the_task(
    runtime: EcsRuntime, moto_url: str, aws: AwsBehaviour
) -> None:
    spec = _spec()
    first = await runtime.start(spec)
    await runtime.stop(first)  # no live task a listing could find
    changed = _spec(spec.instance_id, ServerSpec(chroma_version="1.5.8"))  # another definition

    second = await runtime.start(changed)  # same token: ConflictException

    assert second.data["task_arn"] == first.data["task_arn"]
    assert aws.launched == 1
    key = spec.instance_id

    async def exited() -> bool:  # stopping until its volume is saved (storage=ebs)
        return (await runtime.poll({key: second}))[key].state is ObservedState.EXITED

    await wait_for(exited)


async def test_a_start_does_not_list_tasks_and_a_retry_is_idempotent(
    runtime: EcsRuntime, moto_url: str, aws: AwsBehaviour
) -> None:
    spec = _spec()
    first = await runtime.start(spec)
    again = await runtime.start(spec)  # e.g. after a crash before the handle was saved

    assert again.data["task_arn"] == first.data["task_arn"]
    assert (aws.launched, aws.replayed) == (1, 1)
    assert aws.seen["ListTasks"] == 0


async def test_discovery_lists_by_started_by_only_and_skips_stopped_tasks(
    runtime: EcsRuntime, aws: AwsBehaviour
) -> None:
    aws.invisible_for = 0.0  # about listing: tasks visible at once
    kept = await runtime.start(_spec())
    stopped = await runtime.start(_spec())
    await runtime.stop(stopped)

    found = await runtime.discover()

    assert {k: h.data["task_arn"] for k, h in found.items()} == {
        kept.data["instance_id"]: kept.data["task_arn"]
    }
    assert aws.seen["ListTasks"] >= 1
