"""Event-driven observation (docs/ecs.md "Event-driven observation"): with an SQS
queue fed by an EventBridge rule, task states come from "ECS Task State Change"
events (published by the AWS-behaviour layer through PutEvents, as ECS does), not
from a DescribeTasks per task per liveness pass."""

from __future__ import annotations

import asyncio
import json
import time
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest

from chroma_orch.app import create_app
from chroma_orch.runtimes.base import Handle, InstanceSpec, ObservedState
from chroma_orch.runtimes.ecs.runtime import EcsRuntime
from chroma_orch.runtimes.ecs.tasks import make_handle
from chroma_orch.settings import EcsSettings, ReconcilerSettings
from tests.conftest import make_settings
from tests.ecs import aws_stops
from tests.ecs.aws_behaviour import AwsBehaviour
from tests.ecs.conftest import (
    CLUSTER,
    REGION,
    EcsService,
    events_queue,
    queue_drained,
    task_of,
)
from tests.helpers import bearer, create_tenant, wait_for, wait_phase


@pytest.fixture
async def ecs_settings(ecs_settings: EcsSettings, moto_url: str) -> EcsSettings:
    url = await events_queue(moto_url)
    changes = {
        "events_queue_url": url,
        "events_sweep_interval": 3600,
        "events_wait_seconds": 1,
        # Observation only: with EBS a stopped task shows "stopping" while its volume is
        # saved (test_ecs_ebs.py), which would stand between these tests and the states.
        "storage": "ephemeral",
    }
    return ecs_settings.model_copy(update=changes)


@pytest.fixture
def reconciler_config() -> ReconcilerSettings:
    from tests.ecs.conftest import reconciler_settings

    return reconciler_settings(observe_interval=0.1)


async def _running(service: EcsService, names: list[str]) -> list[str]:
    _, token = await create_tenant(service.http, "acme")
    ids = []
    for name in names:
        created = await service.http.post(
            "/v1/instances", json={"name": name}, headers=bearer(token)
        )
        ids.append(created.json()["instance"]["id"])
    for instance_id in ids:
        await wait_phase(service.http, instance_id, "running")
    return ids


async def test_steady_state_spends_no_describe_per_pass(
    ecs_service: EcsService, aws: AwsBehaviour
) -> None:
    await _running(ecs_service, ["a", "b", "c"])
    before = aws.seen["DescribeTasks"]
    for _ in range(20):  # 20 liveness passes over three running instances
        await ecs_service.reconciler.observe_once()
    assert aws.seen["DescribeTasks"] == before


async def test_the_safety_sweep_describes_each_task_once_per_interval(
    ecs_service: EcsService, aws: AwsBehaviour, moto_url: str
) -> None:
    ids = await _running(ecs_service, ["a", "b"])
    tasks = [await task_of(moto_url, i) for i in ids]
    ecs_service.runtime.settings.events_sweep_interval = 1.0
    before = {t: aws.described[t] for t in tasks}
    passes, window = 0, 3.0
    deadline = time.monotonic() + window
    while time.monotonic() < deadline:  # a liveness pass every 20 ms for 3 s
        await ecs_service.reconciler.observe_once()
        passes += 1
        await asyncio.sleep(0.02)
    swept = [aws.described[t] - before[t] for t in tasks]
    assert passes >= 20
    assert all(1 <= n <= window / 1.0 + 1 for n in swept), swept


async def test_a_task_stopped_by_aws_is_noticed_through_its_event(
    ecs_service: EcsService, aws: AwsBehaviour, moto_url: str
) -> None:
    [instance_id] = await _running(ecs_service, ["main"])
    task = await task_of(moto_url, instance_id)
    described = aws.described[task]
    aws_stops.retire(REGION, CLUSTER, task)
    await task_of(moto_url, instance_id, not_arn=task)  # restarted
    await wait_phase(ecs_service.http, instance_id, "running")
    assert aws.described[task] == described  # no DescribeTasks of the stopped task


async def test_duplicate_and_late_events_do_not_take_a_task_back(
    ecs_service: EcsService, aws: AwsBehaviour, moto_url: str
) -> None:
    [instance_id] = await _running(ecs_service, ["main"])
    task = await task_of(moto_url, instance_id)
    aws_stops.retire(REGION, CLUSTER, task)
    await task_of(moto_url, instance_id, not_arn=task)
    old = [d for d in aws.published if d["taskArn"] == task]
    assert [d["lastStatus"] for d in old][-1] == "STOPPED"
    aws.put_events(old[-1:] + old[:-1])  # the stop again, then the earlier states
    url = str(ecs_service.settings.events_queue_url)
    await wait_for(lambda: queue_drained(moto_url, url))
    described = aws.described[task]
    handle = make_handle(CLUSTER, task, instance_id, None)
    observed = await ecs_service.runtime.poll({instance_id: handle})
    assert observed[instance_id].state is ObservedState.EXITED
    assert observed[instance_id].reason == "ServiceSchedulerInitiated"
    assert aws.described[task] == described  # answered from the event-known state


async def test_a_lost_event_is_repaired_by_the_safety_sweep(
    ecs_service: EcsService, aws: AwsBehaviour, moto_url: str
) -> None:
    [instance_id] = await _running(ecs_service, ["main"])
    task = await task_of(moto_url, instance_id)
    described = aws.described[task]
    aws.drop_events = True
    aws_stops.retire(REGION, CLUSTER, task)  # its event is lost
    for _ in range(10):  # passes answered from the last event-known state
        await ecs_service.reconciler.observe_once()
    assert aws.described[task] == described
    assert (await ecs_service.http.get(f"/v1/instances/{instance_id}")).json()["phase"] == "running"
    ecs_service.runtime.settings.events_sweep_interval = 0.5  # the sweep is due soon
    await task_of(moto_url, instance_id, not_arn=task)  # noticed, restarted
    assert aws.described[task] > described


async def test_every_replica_sees_the_events(
    database_url: str, tmp_path: Path, ecs_settings: EcsSettings, aws: AwsBehaviour
) -> None:
    """SQS gives each message to one of the replicas consuming the queue; every
    replica's poll must see the state all the same."""
    disabled = ReconcilerSettings(enabled=False)
    async with AsyncExitStack() as stack:
        runtimes: list[EcsRuntime] = []
        for name in ("a", "b"):
            settings = make_settings(
                database_url, tmp_path / name, runtime="ecs", ecs=ecs_settings,
                reconciler=disabled,
            )  # fmt: skip
            app = create_app(settings)
            await stack.enter_async_context(app.router.lifespan_context(app))
            runtime: Any = getattr(app.state.ctx.runtime, "inner", app.state.ctx.runtime)
            assert isinstance(runtime, EcsRuntime)
            runtimes.append(runtime)
        spec = InstanceSpec("inst-1", "tenant-1", "main", 1, start_token="inst-1-1")
        handle = await runtimes[0].start(spec)
        arn = str(handle.data["task_arn"])
        handles: dict[str, Handle] = {"inst-1": handle}

        async def all_see(state: ObservedState) -> bool:
            for runtime in runtimes:
                if (await runtime.poll(handles))["inst-1"].state is not state:
                    return False
            return True

        await wait_for(lambda: all_see(ObservedState.RUNNING))
        for _ in range(3):  # several events, so both replicas receive some
            aws_stops.retire(REGION, CLUSTER, arn)
        described = aws.described[arn]
        await wait_for(lambda: all_see(ObservedState.EXITED))
        assert aws.described[arn] == described


def test_only_this_services_tasks_of_this_cluster_are_kept() -> None:
    from chroma_orch.runtimes.ecs.events import task_state

    arn = "arn:aws:ecs:us-east-1:123456789012:task/tenants/abc"
    cluster_arn = "arn:aws:ecs:us-east-1:123456789012:cluster/tenants"
    detail = {"taskArn": arn, "clusterArn": cluster_arn, "startedBy": "chroma-orch",
              "version": 3, "lastStatus": "RUNNING"}  # fmt: skip

    def event(**changes: Any) -> str:
        body = {"detail-type": "ECS Task State Change", "source": "aws.ecs"}
        return json.dumps(body | {"detail": detail | changes})

    assert task_state(event(), "tenants", "chroma-orch") == (arn, 3, detail)
    assert task_state(event(), cluster_arn, "chroma-orch") == (arn, 3, detail)
    assert task_state(event(startedBy="someone-else"), "tenants", "chroma-orch") is None
    assert task_state(event(startedBy=None), "tenants", "chroma-orch") is None
    assert task_state(event(), "other-cluster", "chroma-orch") is None
    assert task_state("not json", "tenants", "chroma-orch") is None
    assert task_state("[1]", "tenants", "chroma-orch") is None
