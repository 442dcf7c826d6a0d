"""Per-instance EFS access points: a task mounts only its own instance's directory
(moto's ECS and EFS, through the AWS-behaviour layer: tests/ecs/aws_efs.py)."""

from __future__ import annotations

import asyncio
import dataclasses
import posixpath
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from chroma_orch.runtimes.base import Handle, InstanceSpec, RuntimeUnavailableError
from chroma_orch.runtimes.ecs.runtime import EcsRuntime
from chroma_orch.settings import EcsSettings
from tests.ecs.aws_behaviour import AwsBehaviour
from tests.ecs.aws_stops import exit_as_aws
from tests.ecs.conftest import CLUSTER, REGION, EcsService, aws_client, cluster_tasks, instance_of
from tests.helpers import bearer, create_tenant, wait_for, wait_phase


@pytest.fixture
async def ecs_settings(ecs_settings: EcsSettings, moto_url: str) -> EcsSettings:
    """The suite's settings with an EFS file system (moto's) for the data."""
    async with aws_client(moto_url, "efs") as efs:
        created = await efs.create_file_system(CreationToken="chroma-data")
    return ecs_settings.model_copy(update={"efs_file_system_id": created["FileSystemId"]})


@pytest.fixture
async def runtime(ecs_settings: EcsSettings) -> AsyncIterator[EcsRuntime]:
    runtime = EcsRuntime(ecs_settings)
    try:
        yield runtime
    finally:
        await runtime.aclose()


def _spec(tenant_id: str | None = None, instance_id: str | None = None) -> InstanceSpec:
    instance_id = instance_id or str(uuid.uuid4())
    return InstanceSpec(
        instance_id=instance_id,
        tenant_id=tenant_id or str(uuid.uuid4()),
        name="main",
        generation=1,
        options={},
        start_token=f"{uuid.UUID(instance_id).hex}-1-{uuid.uuid4().hex[:6]}",
    )


async def _task(moto_url: str, handle: Handle) -> dict[str, Any]:
    async with aws_client(moto_url, "ecs") as ecs:
        answer = await ecs.describe_tasks(cluster=CLUSTER, tasks=[handle.data["task_arn"]])
    (task,) = answer["tasks"]
    return dict(task)


async def _definition(moto_url: str, arn: str) -> dict[str, Any]:
    async with aws_client(moto_url, "ecs") as ecs:
        answer = await ecs.describe_task_definition(taskDefinition=arn)
    return dict(answer["taskDefinition"])


async def _access_points(moto_url: str, file_system: str) -> dict[str, dict[str, Any]]:
    async with aws_client(moto_url, "efs") as efs:
        answer = await efs.describe_access_points(FileSystemId=file_system)
    return {str(p["AccessPointId"]): p for p in answer["AccessPoints"]}


def _efs_volume(definition: dict[str, Any]) -> dict[str, Any]:
    (volume,) = [v for v in definition["volumes"] if "efsVolumeConfiguration" in v]
    return dict(volume["efsVolumeConfiguration"])


async def _reachable_root(moto_url: str, definition: dict[str, Any]) -> str:
    """The directory of the file system a task of ``definition`` mounts: its access
    point's root when it names one, else the volume's ``rootDirectory``."""
    efs = _efs_volume(definition)
    access_point = (efs.get("authorizationConfig") or {}).get("accessPointId")
    if access_point:
        points = await _access_points(moto_url, efs["fileSystemId"])
        return str(points[access_point]["RootDirectory"]["Path"])
    return str(efs.get("rootDirectory") or "/")


async def _data_directory(moto_url: str, task: dict[str, Any]) -> tuple[str, str]:
    """(the root the task can reach, its Chroma data directory), as file system paths."""
    definition = await _definition(moto_url, task["taskDefinitionArn"])
    root = await _reachable_root(moto_url, definition)
    (container,) = definition["containerDefinitions"]
    (mount,) = container["mountPoints"]
    (override,) = task["overrides"]["containerOverrides"]
    path = override["command"][override["command"].index("--path") + 1]
    relative = posixpath.relpath(path, mount["containerPath"])
    return root, posixpath.normpath(posixpath.join(root, relative))


def _handle(task: dict[str, Any], spec: InstanceSpec) -> Handle:
    return Handle(1, {"instance_id": spec.instance_id, "task_arn": task["taskArn"]})


def _next_attempt(spec: InstanceSpec) -> InstanceSpec:
    return dataclasses.replace(spec, start_token=f"{spec.start_token}-next")


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


async def test_an_instances_task_cannot_reach_another_instances_data(
    runtime: EcsRuntime, moto_url: str
) -> None:
    first = await _task(moto_url, await runtime.start(_spec()))
    second = await _task(moto_url, await runtime.start(_spec()))

    first_root, first_data = await _data_directory(moto_url, first)
    second_root, second_data = await _data_directory(moto_url, second)

    assert not _under(second_data, first_root), "the first task reaches the second's data"
    assert not _under(first_data, second_root), "the second task reaches the first's data"
    assert _under(first_data, first_root)
    assert _under(second_data, second_root)


async def test_two_tenants_get_their_own_access_points_and_definitions(
    runtime: EcsRuntime, ecs_settings: EcsSettings, moto_url: str
) -> None:
    specs = [_spec(), _spec()]
    tasks = [await _task(moto_url, await runtime.start(spec)) for spec in specs]

    definitions = [t["taskDefinitionArn"] for t in tasks]
    assert len(set(definitions)) == 2
    points = await _access_points(moto_url, str(ecs_settings.efs_file_system_id))
    assert len(points) == 2
    for spec, task, arn in zip(specs, tasks, definitions, strict=True):
        efs = _efs_volume(await _definition(moto_url, arn))
        access_point = efs["authorizationConfig"]["accessPointId"]
        assert efs["authorizationConfig"]["iam"] == "ENABLED"
        assert efs["transitEncryption"] == "ENABLED"
        point = points[access_point]
        assert point["RootDirectory"]["Path"] == f"/chroma-orch/{spec.tenant_id}/{spec.instance_id}"
        assert point["RootDirectory"]["CreationInfo"] == {
            "OwnerUid": 1000,
            "OwnerGid": 1000,
            "Permissions": "0700",
        }
        assert point["PosixUser"] == {"Uid": 1000, "Gid": 1000}
        tags = {t["Key"]: t["Value"] for t in point["Tags"]}
        assert tags["chroma-orch:instance"] == spec.instance_id
        assert tags["chroma-orch:tenant"] == spec.tenant_id
        (override,) = task["overrides"]["containerOverrides"]
        assert override["command"][:3] == ["run", "--path", "/data"]  # its own mount, whole


async def test_a_restart_reuses_the_access_point_and_definition(
    ecs_settings: EcsSettings, moto_url: str, aws: AwsBehaviour
) -> None:
    spec = _spec()
    runtime = EcsRuntime(ecs_settings)
    try:
        first = await _task(moto_url, await runtime.start(spec))
        await runtime.stop(_handle(first, spec))
        spec = _next_attempt(spec)
        again = await _task(moto_url, await runtime.start(spec))  # same process: cached
        await runtime.stop(_handle(again, spec))
    finally:
        await runtime.aclose()
    assert aws.efs.seen["CreateAccessPoint"] == 1
    restarted = EcsRuntime(ecs_settings)  # the service restarted: nothing cached
    try:
        third = await _task(moto_url, await restarted.start(_next_attempt(spec)))
    finally:
        await restarted.aclose()

    assert first["taskDefinitionArn"] == again["taskDefinitionArn"] == third["taskDefinitionArn"]
    assert len(await _access_points(moto_url, str(ecs_settings.efs_file_system_id))) == 1
    assert aws.efs.seen["CreateAccessPoint"] == 2  # answered AccessPointAlreadyExists
    assert aws.seen["RegisterTaskDefinition"] == 1


async def test_a_new_access_point_is_used_once_available(
    runtime: EcsRuntime, moto_url: str, aws: AwsBehaviour
) -> None:
    aws.efs.creating_for = 0.5
    task = await _task(moto_url, await runtime.start(_spec()))
    assert aws.efs.seen["DescribeAccessPoints"] >= 2  # asked again until available
    root, _ = await _data_directory(moto_url, task)
    assert root.startswith("/chroma-orch/")


async def _cleanup_task(moto_url: str, instance_id: str, not_arn: str | None = None) -> Any:
    async def probe() -> dict[str, Any] | None:
        for task in await cluster_tasks(moto_url):
            tags = {t["key"]: t["value"] for t in task.get("tags", [])}
            if tags.get("chroma-orch:cleanup") == instance_id and task["taskArn"] != not_arn:
                return task
        return None

    return await wait_for(probe)


async def test_delete_empties_and_removes_the_access_point(
    runtime: EcsRuntime, ecs_settings: EcsSettings, moto_url: str
) -> None:
    gone, kept = _spec(), _spec()
    gone_task = await _task(moto_url, await runtime.start(gone))
    await runtime.start(kept)
    fs = str(ecs_settings.efs_file_system_id)
    gone_point = _efs_volume(await _definition(moto_url, gone_task["taskDefinitionArn"]))
    access_point = gone_point["authorizationConfig"]["accessPointId"]

    deleting = asyncio.create_task(runtime.delete(gone.instance_id, None, keep_data=False))
    cleanup = await _cleanup_task(moto_url, gone.instance_id)
    cleanup_definition = await _definition(moto_url, cleanup["taskDefinitionArn"])
    assert _efs_volume(cleanup_definition)["authorizationConfig"]["accessPointId"] == access_point
    assert not deleting.done()  # the access point stays until the data is removed
    assert access_point in await _access_points(moto_url, fs)
    exit_as_aws(REGION, CLUSTER, cleanup["taskArn"], 0)
    await asyncio.wait_for(deleting, timeout=30)

    remaining = await _access_points(moto_url, fs)
    assert access_point not in remaining
    assert len(remaining) == 1
    for arn in (gone_task["taskDefinitionArn"], cleanup["taskDefinitionArn"]):
        assert (await _definition(moto_url, arn))["status"] == "INACTIVE"


async def test_delete_with_keep_data_keeps_the_access_point(
    runtime: EcsRuntime, ecs_settings: EcsSettings, moto_url: str, aws: AwsBehaviour
) -> None:
    spec = _spec()
    task = await _task(moto_url, await runtime.start(spec))

    await runtime.delete(spec.instance_id, None, keep_data=True)

    assert len(await _access_points(moto_url, str(ecs_settings.efs_file_system_id))) == 1
    assert aws.efs.seen["DeleteAccessPoint"] == 0
    assert aws.launched == 1  # no data-removal task
    assert (await _definition(moto_url, task["taskDefinitionArn"]))["status"] == "INACTIVE"


async def test_a_failed_cleanup_keeps_the_access_point_and_is_retried(
    runtime: EcsRuntime, ecs_settings: EcsSettings, moto_url: str, aws: AwsBehaviour
) -> None:
    spec = _spec()
    await runtime.start(spec)
    fs = str(ecs_settings.efs_file_system_id)

    deleting = asyncio.create_task(runtime.delete(spec.instance_id, None, keep_data=False))
    first = await _cleanup_task(moto_url, spec.instance_id)
    exit_as_aws(REGION, CLUSTER, first["taskArn"], 1)
    with pytest.raises(RuntimeUnavailableError):
        await asyncio.wait_for(deleting, timeout=30)
    assert len(await _access_points(moto_url, fs)) == 1

    deleting = asyncio.create_task(runtime.delete(spec.instance_id, None, keep_data=False))
    second = await _cleanup_task(moto_url, spec.instance_id, not_arn=first["taskArn"])
    exit_as_aws(REGION, CLUSTER, second["taskArn"], 0)
    await asyncio.wait_for(deleting, timeout=30)
    assert await _access_points(moto_url, fs) == {}
    assert aws.launched == 3  # the server, then one cleanup task per attempt


async def test_delete_through_the_api_removes_the_access_point(
    ecs_service: EcsService, moto_url: str
) -> None:
    http = ecs_service.http
    _, token = await create_tenant(http, "acme")
    created = await http.post("/v1/instances", json={"name": "main"}, headers=bearer(token))
    instance_id = created.json()["instance"]["id"]
    await wait_phase(http, instance_id, "running")
    (task,) = [t for t in await cluster_tasks(moto_url) if instance_of(t) == instance_id]
    fs = str(ecs_service.settings.efs_file_system_id)
    assert len(await _access_points(moto_url, fs)) == 1

    assert (await http.delete(f"/v1/instances/{instance_id}")).status_code == 202
    cleanup = await _cleanup_task(moto_url, instance_id)
    exit_as_aws(REGION, CLUSTER, cleanup["taskArn"], 0)

    async def deleted() -> bool:
        return (await http.get(f"/v1/instances/{instance_id}")).status_code == 404

    await wait_for(deleted, timeout=30)
    assert await _access_points(moto_url, fs) == {}
    assert (await _definition(moto_url, task["taskDefinitionArn"]))["status"] == "INACTIVE"
