"""chroma-orch snapshots on ECS with EBS (storage=ebs): an EBS snapshot copy of the
instance's quiesced data, tagged with instance, tenant and snapshot; restore and clone
start from it; DELETE deletes it; the runtime's own volume lifecycle never does. The
AWS-behaviour layer (tests/ecs/aws_volumes.py) makes volumes, snapshots and copies
take time as AWS does."""

from __future__ import annotations

from typing import Any

import httpx

from tests.ecs.aws_behaviour import AwsBehaviour
from tests.ecs.conftest import EcsService, task_of
from tests.ecs.test_ecs_ebs import (
    INSTANCE_TAG,
    _ec2,
    _running_instance,
    _snapshots,
    _task_volume,
)
from tests.helpers import wait_for, wait_phase

OWNER_TAG = "chroma-orch:snapshot"


def _tags(item: dict[str, Any]) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in item.get("Tags") or []}


async def _take(http: httpx.AsyncClient, instance_id: str) -> dict[str, Any]:
    """Ask for a snapshot and wait until it is ready."""
    asked = await http.post(f"/v1/instances/{instance_id}/snapshots")
    assert asked.status_code == 202, asked.text
    return await _settled(http, str(asked.json()["id"]))


async def _settled(http: httpx.AsyncClient, snapshot_id: str) -> dict[str, Any]:
    async def settled() -> dict[str, Any] | None:
        body: dict[str, Any] = (await http.get(f"/v1/snapshots/{snapshot_id}")).json()
        return body if body["phase"] in ("ready", "failed") else None

    snapshot: dict[str, Any] = await wait_for(settled, timeout=60)
    assert snapshot["phase"] == "ready", snapshot
    return snapshot


async def _owned(service: EcsService, snapshot_id: str) -> dict[str, Any]:
    """The EBS snapshot a snapshot row owns (found by its owner tag)."""
    filters = [{"Name": f"tag:{OWNER_TAG}", "Values": [snapshot_id]}]
    answer = await _ec2(service.settings, "describe_snapshots", Filters=filters, OwnerIds=["self"])
    (found,) = answer["Snapshots"]
    return dict(found)


async def _exists(service: EcsService, ebs_id: str) -> bool:
    answer = await _ec2(service.settings, "describe_snapshots", OwnerIds=["self"])
    return ebs_id in {s["SnapshotId"] for s in answer["Snapshots"]}


async def _newest_stop_snapshot(service: EcsService, instance_id: str) -> dict[str, Any]:
    lineage = [
        s for s in await _snapshots(service.settings, instance_id) if OWNER_TAG not in _tags(s)
    ]
    return max(lineage, key=lambda s: int(_tags(s)["chroma-orch:sequence"]))


async def test_a_running_instance_is_quiesced_and_its_saved_volume_copied(
    ecs_service: EcsService, aws: AwsBehaviour
) -> None:
    http = ecs_service.http
    instance_id, first_arn = await _running_instance(ecs_service)
    first = await _task_volume(ecs_service, first_arn)
    tenant = _tags(first)["chroma-orch:tenant"]
    restarts = (await http.get(f"/v1/instances/{instance_id}")).json()["restart_count"]

    snapshot = await _take(http, instance_id)

    assert snapshot["store"] == "ebs"
    ebs = await _owned(ecs_service, snapshot["id"])
    assert ebs["State"] == "completed"
    tags = _tags(ebs)
    assert tags[INSTANCE_TAG] == instance_id
    assert tags["chroma-orch:tenant"] == tenant
    assert tags[OWNER_TAG] == snapshot["id"]
    # the copy is of the stop snapshot of the first task's volume: the data at rest
    source = aws.volumes.copied[ebs["SnapshotId"]]
    (saved,) = [s for s in await _snapshots(ecs_service.settings, instance_id)
                if s["SnapshotId"] == source]  # fmt: skip
    assert saved["VolumeId"] == first["VolumeId"]
    # and the instance runs again, on a new task whose volume holds that data
    await wait_phase(http, instance_id, "running")
    second_arn = await task_of(str(ecs_service.settings.endpoint_url), instance_id, first_arn)
    assert (await _task_volume(ecs_service, second_arn))["SnapshotId"] == source
    # launched with a token of its own, not counted as a crash: with the first task's
    # token, RunTask handed back the stopped task, every snapshot counted a restart
    # and the fourth failed the instance (restart_limit 3)
    tokens = [request["clientToken"] for request in aws.run_task_requests]
    assert tokens[-1] not in tokens[:-1], tokens
    assert (await http.get(f"/v1/instances/{instance_id}")).json()["restart_count"] == restarts


async def test_a_stopped_instance_is_snapshotted_without_a_start(
    ecs_service: EcsService, aws: AwsBehaviour
) -> None:
    http = ecs_service.http
    instance_id, _ = await _running_instance(ecs_service)
    assert (await http.post(f"/v1/instances/{instance_id}/stop")).status_code == 202
    await wait_phase(http, instance_id, "stopped")
    launches = len(aws.run_task_requests)
    saved = await _newest_stop_snapshot(ecs_service, instance_id)

    snapshot = await _take(http, instance_id)

    ebs = await _owned(ecs_service, snapshot["id"])
    assert aws.volumes.copied[ebs["SnapshotId"]] == saved["SnapshotId"]
    assert len(aws.run_task_requests) == launches
    assert (await http.get(f"/v1/instances/{instance_id}")).json()["phase"] == "stopped"


async def test_restore_starts_from_the_snapshot_and_keeps_the_data_it_replaced(
    ecs_service: EcsService, aws: AwsBehaviour
) -> None:
    http, endpoint = ecs_service.http, str(ecs_service.settings.endpoint_url)
    instance_id, _ = await _running_instance(ecs_service)
    snapshot = await _take(http, instance_id)
    chosen = (await _owned(ecs_service, snapshot["id"]))["SnapshotId"]
    before_arn = await task_of(endpoint, instance_id)  # runs on data newer than the snapshot
    before = await _task_volume(ecs_service, before_arn)

    restored = await http.post(
        f"/v1/instances/{instance_id}/restore", json={"snapshot_id": snapshot["id"]}
    )
    assert restored.status_code == 202, restored.text

    after_arn = await task_of(endpoint, instance_id, not_arn=before_arn)
    await wait_phase(http, instance_id, "running")
    volume = await _task_volume(ecs_service, after_arn)
    assert aws.volumes.copied[volume["SnapshotId"]] == chosen  # a copy of the chosen one
    assert (
        _tags(await _ec2_snapshot(ecs_service, volume["SnapshotId"]))[INSTANCE_TAG] == instance_id
    )
    listed = (await http.get(f"/v1/instances/{instance_id}/snapshots")).json()["items"]
    (kept,) = [s for s in listed if s["kind"] == "pre_restore"]
    assert kept["phase"] == "ready"
    assert kept["store"] == "ebs"
    kept_source = aws.volumes.copied[(await _owned(ecs_service, kept["id"]))["SnapshotId"]]
    assert (await _ec2_snapshot(ecs_service, kept_source))["VolumeId"] == before["VolumeId"]


async def _ec2_snapshot(service: EcsService, ebs_id: str) -> dict[str, Any]:
    answer = await _ec2(service.settings, "describe_snapshots", SnapshotIds=[ebs_id])
    (found,) = answer["Snapshots"]
    return dict(found)


async def test_a_clone_starts_from_the_snapshot(ecs_service: EcsService, aws: AwsBehaviour) -> None:
    http, endpoint = ecs_service.http, str(ecs_service.settings.endpoint_url)
    instance_id, _ = await _running_instance(ecs_service)
    snapshot = await _take(http, instance_id)
    chosen = await _owned(ecs_service, snapshot["id"])

    created = await http.post(
        "/v1/instances",
        json={"name": "copy", "from_snapshot": snapshot["id"], "tenant_id": snapshot["tenant_id"]},
    )
    assert created.status_code == 202, created.text
    clone_id = str(created.json()["instance"]["id"])
    await wait_phase(http, clone_id, "running")

    volume = await _task_volume(ecs_service, await task_of(endpoint, clone_id))
    assert aws.volumes.copied[volume["SnapshotId"]] == chosen["SnapshotId"]
    tags = _tags(await _ec2_snapshot(ecs_service, volume["SnapshotId"]))
    assert tags[INSTANCE_TAG] == clone_id
    assert tags["chroma-orch:tenant"] == snapshot["tenant_id"]
    assert OWNER_TAG not in tags  # the clone's own lineage, not the snapshot's


async def test_deleting_the_snapshot_deletes_its_ebs_snapshot(ecs_service: EcsService) -> None:
    http = ecs_service.http
    instance_id, _ = await _running_instance(ecs_service)
    snapshot = await _take(http, instance_id)
    ebs_id = (await _owned(ecs_service, snapshot["id"]))["SnapshotId"]

    assert (await http.delete(f"/v1/snapshots/{snapshot['id']}")).status_code == 202

    async def gone() -> bool:
        return (await http.get(f"/v1/snapshots/{snapshot['id']}")).status_code == 404

    await wait_for(gone)
    assert not await _exists(ecs_service, ebs_id)


async def test_the_volume_lifecycle_never_deletes_a_snapshot_a_row_owns(
    ecs_service: EcsService,
) -> None:
    """Stop snapshots are pruned past EBS_KEEP_SNAPSHOTS and a delete without
    keep_data removes the instance's volumes and snapshots: never the owned ones."""
    http = ecs_service.http
    instance_id, _ = await _running_instance(ecs_service)
    snapshot = await _take(http, instance_id)
    ebs_id = (await _owned(ecs_service, snapshot["id"]))["SnapshotId"]
    for _ in range(ecs_service.settings.ebs_keep_snapshots + 1):  # prunes the oldest
        await wait_phase(http, instance_id, "running")
        assert (await http.post(f"/v1/instances/{instance_id}/stop")).status_code == 202
        await wait_phase(http, instance_id, "stopped")
        assert (await http.post(f"/v1/instances/{instance_id}/start")).status_code == 202
    assert await _exists(ecs_service, ebs_id)

    deleted = await http.delete(f"/v1/instances/{instance_id}")
    assert deleted.status_code == 202, deleted.text

    async def lineage_gone() -> bool:
        left = await _snapshots(ecs_service.settings, instance_id)
        return all(OWNER_TAG in _tags(s) for s in left)

    await wait_for(lineage_gone, timeout=60)
    assert await _exists(ecs_service, ebs_id)
