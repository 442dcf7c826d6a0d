"""Images and capacity options reach AWS: the registered task definition (read back
from moto) and the RunTask request (recorded by the AWS-behaviour layer)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from chroma_orch.runtimes.base import InstanceSpec, ServerSpec
from chroma_orch.runtimes.ecs.runtime import EcsRuntime
from chroma_orch.settings import EcsSettings
from tests.ecs.aws_behaviour import AwsBehaviour
from tests.ecs.conftest import CLUSTER, aws_client

PULL_THROUGH = "123456789012.dkr.ecr.us-east-1.amazonaws.com/docker-hub/chromadb/chroma:1.5.9"


def _spec() -> InstanceSpec:
    instance_id = str(uuid.uuid4())
    return InstanceSpec(
        instance_id=instance_id,
        tenant_id=str(uuid.uuid4()),
        name="main",
        generation=1,
        start_token=f"{uuid.UUID(instance_id).hex}-1-0",
    )


async def _launch(settings: EcsSettings) -> str:
    runtime = EcsRuntime(settings)
    try:
        handle = await runtime.start(_spec())
        return str(handle.data["task_arn"])
    finally:
        await runtime.aclose()


async def _definition_of(moto_url: str, task_arn: str) -> dict[str, Any]:
    async with aws_client(moto_url, "ecs") as ecs:
        task = (await ecs.describe_tasks(cluster=CLUSTER, tasks=[task_arn]))["tasks"][0]
        found = await ecs.describe_task_definition(taskDefinition=task["taskDefinitionArn"])
        definition: dict[str, Any] = found["taskDefinition"]
        return definition


async def test_the_default_task_definition(
    ecs_settings: EcsSettings, moto_url: str, aws: AwsBehaviour
) -> None:
    definition = await _definition_of(moto_url, await _launch(ecs_settings))
    (container,) = definition["containerDefinitions"]
    assert container["image"] == PULL_THROUGH  # the execution role's account
    assert container["stopTimeout"] == 30
    assert definition["runtimePlatform"] == {
        "cpuArchitecture": "X86_64",
        "operatingSystemFamily": "LINUX",
    }
    assert "ephemeralStorage" not in definition
    (request,) = aws.run_task_requests
    assert request["launchType"] == "FARGATE"
    assert "capacityProviderStrategy" not in request


async def test_arm64_spot_storage_stop_timeout_and_registry(
    ecs_settings: EcsSettings, moto_url: str, aws: AwsBehaviour
) -> None:
    async with aws_client(moto_url, "ecs") as ecs:
        await ecs.put_cluster_capacity_providers(
            cluster=CLUSTER,
            capacityProviders=["FARGATE", "FARGATE_SPOT"],
            defaultCapacityProviderStrategy=[],
        )
    changes = {
        "cpu_architecture": "ARM64",
        "capacity_providers": [
            {"capacity_provider": "FARGATE", "base": 0, "weight": 1},
            {"capacity_provider": "FARGATE_SPOT", "weight": 3},
        ],
        "ephemeral_storage": 50,
        "stop_timeout": 120,
        "image_registry": "registry.example.com/mirror",
        "image_tag": "1.5.10",
    }
    settings = EcsSettings.model_validate(ecs_settings.model_dump() | changes)
    definition = await _definition_of(moto_url, await _launch(settings))
    (container,) = definition["containerDefinitions"]
    assert container["image"] == "registry.example.com/mirror/chromadb/chroma:1.5.10"
    assert container["stopTimeout"] == 120
    assert definition["runtimePlatform"] == {
        "cpuArchitecture": "ARM64",
        "operatingSystemFamily": "LINUX",
    }
    assert definition["ephemeralStorage"] == {"sizeInGiB": 50}
    (request,) = aws.run_task_requests
    assert "launchType" not in request
    assert request["capacityProviderStrategy"] == [
        {"capacityProvider": "FARGATE", "weight": 1, "base": 0},
        {"capacityProvider": "FARGATE_SPOT", "weight": 3, "base": 0},
    ]


def test_docker_hub_without_an_account_and_the_limits_of_the_settings() -> None:
    from pydantic import ValidationError

    from chroma_orch.runtimes.ecs.tasks import server_definition

    settings = EcsSettings()
    (container,) = server_definition(settings, ServerSpec())["containerDefinitions"]
    assert container["image"] == "chromadb/chroma:1.5.9"
    for bad in ({"stop_timeout": 121}, {"ephemeral_storage": 20}, {"ephemeral_storage": 201}):
        with pytest.raises(ValidationError):
            EcsSettings.model_validate(bad)
