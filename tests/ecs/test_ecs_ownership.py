"""Ownership: a task whose handle was never saved is adopted; orphans are stopped."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from chroma_orch.db.models import Instance
from chroma_orch.reconciler.loop import Reconciler
from chroma_orch.runtimes.base import InstanceSpec, ServerSpec
from chroma_orch.runtimes.ecs.tasks import server_definition
from chroma_orch.settings import ReconcilerSettings
from tests.ecs.aws_behaviour import AwsBehaviour
from tests.ecs.conftest import CLUSTER, EcsService, aws_client, cluster_tasks, instance_of
from tests.helpers import bearer, converge, create_tenant, wait_for


@pytest.fixture
def reconciler_config() -> ReconcilerSettings:
    return ReconcilerSettings(enabled=False)  # the tests drive passes themselves


def _reconciler(service: EcsService) -> Reconciler:
    settings = service.app.state.settings.model_copy(
        update={"reconciler": ReconcilerSettings(backoff_base=0.01, backoff_max=0.05)}
    )
    return Reconciler(service.app.state.ctx.sessions, service.runtime, settings)


async def _instance(service: EcsService, token: str, name: str) -> dict[str, Any]:
    created = await service.http.post("/v1/instances", json={"name": name}, headers=bearer(token))
    assert created.status_code == 202
    body: dict[str, Any] = created.json()["instance"]
    return body


async def test_crash_between_run_task_and_commit_adopts(
    ecs_service: EcsService, moto_url: str, aws: AwsBehaviour
) -> None:
    _, token = await create_tenant(ecs_service.http, "acme")
    inst = await _instance(ecs_service, token, "main")
    # A replica launched the task, then died before saving the handle.
    spec = InstanceSpec(
        instance_id=inst["id"],
        tenant_id=inst["tenant_id"],
        name="main",
        generation=inst["generation"],
        start_token=f"{uuid.UUID(inst['id']).hex}-{inst['generation']}-0",
    )
    launched = await ecs_service.runtime.start(spec)

    await converge(_reconciler(ecs_service))

    body = (await ecs_service.http.get(f"/v1/instances/{inst['id']}")).json()
    assert body["phase"] == "running"
    (task,) = await cluster_tasks(moto_url)
    assert task["taskArn"] == launched.data["task_arn"]
    assert aws.launched == 1  # the same clientToken got the launched task back
    async with ecs_service.app.state.ctx.sessions() as session:
        row = await session.get(Instance, uuid.UUID(inst["id"]))
        assert row is not None
        assert row.handle is not None
        assert row.handle["task_arn"] == launched.data["task_arn"]


async def _run_foreign_task(service: EcsService, started_by: str, instance_id: str) -> str:
    # the same task definition the service uses
    definition = await service.runtime._definition(
        server_definition(service.settings, ServerSpec())
    )
    async with aws_client(service.settings.endpoint_url or "", "ecs") as ecs:
        answer = await ecs.run_task(
            cluster=CLUSTER,
            taskDefinition=definition,
            launchType="FARGATE",
            startedBy=started_by,
            tags=[{"key": "chroma-orch:instance", "value": instance_id}],
            networkConfiguration={
                "awsvpcConfiguration": {
                    "subnets": service.settings.subnets,
                    "securityGroups": service.settings.security_groups,
                }
            },
        )
    return str(answer["tasks"][0]["taskArn"])


async def test_orphans_are_stopped_and_others_left_alone(
    ecs_service: EcsService, moto_url: str
) -> None:
    _, token = await create_tenant(ecs_service.http, "acme")
    wanted = await _instance(ecs_service, token, "wanted")
    stopped = await _instance(ecs_service, token, "stopped")
    reconciler = _reconciler(ecs_service)
    await converge(reconciler)
    await ecs_service.http.post(f"/v1/instances/{stopped['id']}/stop")
    await converge(reconciler)

    service_name = ecs_service.settings.service_name
    unknown = await _run_foreign_task(ecs_service, service_name, str(uuid.uuid4()))
    not_wanted = await _run_foreign_task(ecs_service, service_name, stopped["id"])
    foreign = await _run_foreign_task(ecs_service, "someone-else", str(uuid.uuid4()))

    # Tasks just launched may be unknown to DescribeTasks for a moment (eventual
    # consistency, modelled by the AWS-behaviour layer): a pass leaves those for the next.
    collected = 0

    async def both_collected() -> bool:
        nonlocal collected
        collected += await reconciler.collect_orphans()
        return collected >= 2

    await wait_for(both_collected, timeout=15, interval=0.2)
    assert collected == 2

    live = {t["taskArn"]: instance_of(t) for t in await cluster_tasks(moto_url)}
    assert unknown not in live
    assert not_wanted not in live
    assert foreign in live
    assert wanted["id"] in live.values()
    assert await reconciler.collect_orphans() == 0


async def test_discovery_describes_in_batches_not_once_per_instance(
    ecs_service: EcsService, aws: AwsBehaviour
) -> None:
    """An orphan pass (discovery) over instances of one task each costs the listing's
    batched DescribeTasks (100 tasks a call), not one more call per instance."""
    _, token = await create_tenant(ecs_service.http, "acme")
    for k in range(5):
        await _instance(ecs_service, token, f"i{k}")
    await converge(_reconciler(ecs_service))
    aws.seen.clear()
    found = await ecs_service.runtime.discover()
    assert len(found) == 5
    assert aws.seen["DescribeTasks"] == 1
