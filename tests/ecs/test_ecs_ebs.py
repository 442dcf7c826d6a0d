"""Instance data on ECS-managed EBS volumes (storage=ebs, the default): each task
gets a volume restored from the instance's newest snapshot, a stopped task's
volume is snapshotted and deleted, and delete removes (or keeps) the data. The
AWS-behaviour layer (tests/ecs/aws_volumes.py) creates the volumes moto does not."""

from __future__ import annotations

from typing import Any

import pytest

from chroma_orch.runtimes.base import InstanceSpec, RuntimeUnavailableError, ServerSpec
from chroma_orch.runtimes.ecs.runtime import EcsRuntime
from chroma_orch.runtimes.ecs.tasks import server_definition
from chroma_orch.runtimes.ecs.volumes import TAG_OWNER
from chroma_orch.settings import EcsSettings
from tests.ecs.aws_behaviour import AwsBehaviour
from tests.ecs.aws_stops import stop_as_aws
from tests.ecs.conftest import CLUSTER, REGION, EcsService, aws_client, task_of
from tests.helpers import bearer, create_tenant, wait_for, wait_phase

INSTANCE_TAG = "chroma-orch:instance"


async def _ec2(settings: EcsSettings, operation: str, **params: Any) -> dict[str, Any]:
    """An EC2 call through the AWS-behaviour layer (so its clock has moved on)."""
    async with aws_client(str(settings.endpoint_url), "ec2") as ec2:
        answer: dict[str, Any] = await getattr(ec2, operation)(**params)
        return answer


async def _volumes(settings: EcsSettings, instance_id: str) -> list[dict[str, Any]]:
    filters = [{"Name": f"tag:{INSTANCE_TAG}", "Values": [instance_id]}]
    answer = await _ec2(settings, "describe_volumes", Filters=filters)
    return list(answer["Volumes"])


async def _snapshots(settings: EcsSettings, instance_id: str) -> list[dict[str, Any]]:
    filters = [{"Name": f"tag:{INSTANCE_TAG}", "Values": [instance_id]}]
    answer = await _ec2(settings, "describe_snapshots", Filters=filters, OwnerIds=["self"])
    return list(answer["Snapshots"])


async def _task_volume(service: EcsService, task_arn: str) -> dict[str, Any]:
    """The task's EBS attachment (DescribeTasks, as the runtime sees it) and its volume."""
    async with aws_client(str(service.settings.endpoint_url), "ecs") as ecs:
        (task,) = (await ecs.describe_tasks(cluster=CLUSTER, tasks=[task_arn]))["tasks"]
    (ebs,) = [a for a in task["attachments"] if a["type"] == "AmazonElasticBlockStorage"]
    details = {d["name"]: d["value"] for d in ebs["details"]}
    answer = await _ec2(service.settings, "describe_volumes", VolumeIds=[details["volumeId"]])
    (volume,) = answer["Volumes"]
    return dict(volume)


async def _running_instance(service: EcsService, name: str = "main") -> tuple[str, str]:
    _, token = await create_tenant(service.http, f"t-{name}")
    created = await service.http.post("/v1/instances", json={"name": name}, headers=bearer(token))
    assert created.status_code == 202, created.text
    instance_id = str(created.json()["instance"]["id"])
    await wait_phase(service.http, instance_id, "running")
    return instance_id, await task_of(str(service.settings.endpoint_url), instance_id)


async def test_stop_snapshots_the_volume_and_start_restores_it(
    ecs_service: EcsService, aws: AwsBehaviour
) -> None:
    http, settings = ecs_service.http, ecs_service.settings
    instance_id, first_arn = await _running_instance(ecs_service)
    first = await _task_volume(ecs_service, first_arn)
    assert first["State"] == "in-use"
    assert not first.get("SnapshotId")  # a new instance starts empty
    tags = {t["Key"]: t["Value"] for t in first["Tags"]}
    assert tags[INSTANCE_TAG] == instance_id
    assert tags["chroma-orch:tenant"]

    assert (await http.post(f"/v1/instances/{instance_id}/stop")).status_code == 202
    await wait_phase(http, instance_id, "stopped")
    (snapshot,) = await _snapshots(settings, instance_id)
    assert snapshot["VolumeId"] == first["VolumeId"]
    assert snapshot["State"] == "completed"
    assert await _volumes(settings, instance_id) == []  # saved, then deleted

    assert (await http.post(f"/v1/instances/{instance_id}/start")).status_code == 202
    await wait_phase(http, instance_id, "running")
    second_arn = await task_of(str(settings.endpoint_url), instance_id, not_arn=first_arn)
    second = await _task_volume(ecs_service, second_arn)
    assert second["SnapshotId"] == snapshot["SnapshotId"]
    assert second["VolumeId"] != first["VolumeId"]


async def test_a_crashed_task_is_snapshotted_before_the_restart(
    ecs_service: EcsService, aws: AwsBehaviour
) -> None:
    settings = ecs_service.settings
    instance_id, first_arn = await _running_instance(ecs_service)
    first = await _task_volume(ecs_service, first_arn)
    aws.volumes.hold_snapshots = True
    stop_as_aws(REGION, CLUSTER, first_arn, "EssentialContainerExited", "exit code 1")

    async def snapshot_pending() -> list[dict[str, Any]]:
        return [s for s in await _snapshots(settings, instance_id) if s["State"] == "pending"]

    (pending,) = await wait_for(snapshot_pending)
    assert pending["VolumeId"] == first["VolumeId"]

    # ECS freed the task's IP for other tasks: nothing routes there while its data is
    # saved (before, the instance kept its endpoint until the save completed)
    async def unrouted() -> bool:
        body = (await ecs_service.http.get(f"/v1/instances/{instance_id}")).json()
        return body["endpoint"] is None

    await wait_for(unrouted, timeout=10)
    assert len(aws.volumes.created) == 1  # no restart while the snapshot is pending
    aws.volumes.hold_snapshots = False

    second_arn = await task_of(str(settings.endpoint_url), instance_id, not_arn=first_arn)
    second = await _task_volume(ecs_service, second_arn)
    assert second["SnapshotId"] == pending["SnapshotId"]
    await wait_phase(ecs_service.http, instance_id, "running")
    assert [v["VolumeId"] for v in await _volumes(settings, instance_id)] == [second["VolumeId"]]


async def test_delete_removes_volumes_and_snapshots(ecs_service: EcsService) -> None:
    http, settings = ecs_service.http, ecs_service.settings
    instance_id, _ = await _running_instance(ecs_service)
    assert (await http.post(f"/v1/instances/{instance_id}/stop")).status_code == 202
    await wait_phase(http, instance_id, "stopped")
    assert (await http.post(f"/v1/instances/{instance_id}/start")).status_code == 202
    await wait_phase(http, instance_id, "running")
    assert len(await _snapshots(settings, instance_id)) == 1

    assert (await http.delete(f"/v1/instances/{instance_id}")).status_code == 202

    async def gone() -> bool:
        return (await http.get(f"/v1/instances/{instance_id}")).status_code == 404

    await wait_for(gone)
    assert await _volumes(settings, instance_id) == []
    # the runtime's own snapshots are gone; what an undelete restores stays, owned by
    # its pre_delete snapshot (docs/data.md "Undelete"), until a purge
    (kept,) = await _snapshots(settings, instance_id)
    tags = {tag["Key"]: tag["Value"] for tag in kept["Tags"]}
    listed = await http.get(f"/v1/instances/{instance_id}/snapshots")
    (pre_delete,) = listed.json()["items"]
    assert pre_delete["kind"] == "pre_delete"
    assert tags["chroma-orch:snapshot"] == pre_delete["id"]

    purged = await http.delete(f"/v1/instances/{instance_id}", params={"purge": "true"})
    assert purged.status_code == 202

    async def purged_all() -> bool:
        return await _snapshots(settings, instance_id) == []

    await wait_for(purged_all)


async def test_delete_with_keep_data_keeps_the_snapshot(ecs_service: EcsService) -> None:
    http, settings = ecs_service.http, ecs_service.settings
    instance_id, first_arn = await _running_instance(ecs_service)
    volume = await _task_volume(ecs_service, first_arn)

    deleted = await http.delete(f"/v1/instances/{instance_id}", params={"keep_data": "true"})
    assert deleted.status_code == 202

    async def gone() -> bool:
        return (await http.get(f"/v1/instances/{instance_id}")).status_code == 404

    await wait_for(gone)
    assert await _volumes(settings, instance_id) == []
    snapshots = await _snapshots(settings, instance_id)
    owned = [s for s in snapshots if any(t["Key"] == TAG_OWNER for t in s["Tags"])]
    (kept,) = [s for s in snapshots if s not in owned]  # the runtime's own, kept
    assert kept["VolumeId"] == volume["VolumeId"]
    assert kept["State"] == "completed"
    assert len(owned) == 1  # the pre_delete snapshot's copy (docs/data.md "Undelete")


def _spec(instance_id: str, attempt: int) -> InstanceSpec:
    return InstanceSpec(
        instance_id=instance_id,
        tenant_id="tenant-1",
        name="main",
        generation=1,
        start_token=f"{instance_id}-1-{attempt}",
    )


async def test_a_service_dying_between_stop_task_and_the_snapshot_is_healed(
    ecs_settings: EcsSettings, aws: AwsBehaviour
) -> None:
    """The service sent StopTask and died: the restarted service finds the unsaved
    volume, snapshots it and starts from that snapshot, never from an older one
    (or from nothing) while the snapshot is pending."""
    instance_id = "inst-0123456789"
    dying = EcsRuntime(ecs_settings)
    try:
        handle = await dying.start(_spec(instance_id, 0))
        await task_of(str(ecs_settings.endpoint_url), instance_id)
        await dying.stop(handle)
    finally:
        await dying.aclose()
    (unsaved,) = await _volumes(ecs_settings, instance_id)
    assert unsaved["State"] == "available"
    assert await _snapshots(ecs_settings, instance_id) == []

    aws.volumes.hold_snapshots = True
    restarted = EcsRuntime(ecs_settings)
    try:
        with pytest.raises(RuntimeUnavailableError, match="pending"):
            await restarted.start(_spec(instance_id, 1))
        assert len(aws.volumes.created) == 1  # no task on other data meanwhile
        (pending,) = await _snapshots(ecs_settings, instance_id)
        assert pending["VolumeId"] == unsaved["VolumeId"]

        aws.volumes.hold_snapshots = False

        async def started() -> bool:
            try:
                await restarted.start(_spec(instance_id, 1))
            except RuntimeUnavailableError:
                return False
            return True

        await wait_for(started)
    finally:
        await restarted.aclose()
    volumes = await _volumes(ecs_settings, instance_id)
    assert [v["SnapshotId"] for v in volumes] == [pending["SnapshotId"]]
    assert unsaved["VolumeId"] not in {v["VolumeId"] for v in volumes}


async def test_unsaved_volumes_are_saved_oldest_first_the_newest_numbered_highest(
    ecs_settings: EcsSettings, aws: AwsBehaviour
) -> None:
    """Two volumes left unsaved (a stray task's beside the instance's own) are saved
    one at a time, the older first, so the newer one's snapshot numbers highest, even
    when the older one's snapshot fails and is taken again. Before, both were saved at
    once with the same number, and the older one's retry numbered above the newer
    one's: the next start restored the older data."""
    instance_id = "inst-0123456789"
    aws.volumes.hold_snapshots = True
    tagged = [{"ResourceType": "volume", "Tags": [{"Key": INSTANCE_TAG, "Value": instance_id}]}]
    older, newer = [
        (
            await _ec2(
                ecs_settings,
                "create_volume",
                AvailabilityZone=f"{REGION}a",
                Size=1,
                TagSpecifications=tagged,
            )
        )["VolumeId"]
        for _ in range(2)
    ]

    async def sequences() -> dict[str, list[tuple[str, str]]]:
        found: dict[str, list[tuple[str, str]]] = {}
        for snapshot in await _snapshots(ecs_settings, instance_id):
            tags = {t["Key"]: t["Value"] for t in snapshot["Tags"]}
            found.setdefault(snapshot["VolumeId"], []).append(
                (tags["chroma-orch:sequence"], snapshot["State"])
            )
        return {volume: sorted(taken) for volume, taken in found.items()}

    runtime = EcsRuntime(ecs_settings)
    try:
        assert runtime.volumes is not None
        volumes = runtime.volumes
        assert "pending" in str(await volumes.save(instance_id))
        first = await sequences()
        assert first == {older: [("1", "pending")]}, first  # the newer one waits its turn
        (failed,) = await _snapshots(ecs_settings, instance_id)
        aws.volumes.fail_snapshot(REGION, failed["SnapshotId"])
        aws.volumes.hold_snapshots = False

        async def saved() -> bool:
            return await volumes.save(instance_id) is None

        await wait_for(saved)
    finally:
        await runtime.aclose()
    last = await sequences()
    assert last == {older: [("1", "error"), ("2", "completed")], newer: [("3", "completed")]}, last


def test_the_task_definition_defers_the_volume_to_launch() -> None:
    settings = EcsSettings(ebs_role_arn="arn:aws:iam::123456789012:role/infra")
    definition = server_definition(settings, ServerSpec())
    assert definition["volumes"] == [{"name": "data", "configuredAtLaunch": True}]
    (container,) = definition["containerDefinitions"]
    assert container["mountPoints"] == [
        {"sourceVolume": "data", "containerPath": "/data", "readOnly": False}
    ]
    efs = EcsSettings(efs_file_system_id="fs-1")  # an EFS deployment keeps EFS
    assert efs.storage_mode == "efs"
    assert "efsVolumeConfiguration" in server_definition(efs, ServerSpec(), "fsap-1")["volumes"][0]
    assert server_definition(EcsSettings(storage="ephemeral"), ServerSpec())["volumes"] == []


def test_ebs_storage_without_the_infrastructure_role_is_refused() -> None:
    with pytest.raises(ValueError, match="EBS_ROLE_ARN"):
        EcsRuntime(EcsSettings())
