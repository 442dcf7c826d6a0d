"""Instance data on ECS-managed EBS volumes (``storage=ebs``).

ECS creates one volume per task from the ``volumeConfigurations`` of ``RunTask``
(the task definition's ``data`` volume is ``configuredAtLaunch``), optionally from
a snapshot, and with ``deleteOnTermination: false`` leaves it in the account,
detached (EC2 state ``available``), once the task has stopped (ECS API reference,
``TaskManagedEBSVolumeTerminationPolicy``; developer guide "Use Amazon EBS volumes
with Amazon ECS"). So the data outlives a task only through a snapshot:

1. a task stops (asked for, or it crashed): ``save`` snapshots its volume
   (``CreateSnapshot``, tagged instance / tenant / generation / sequence), waits
   for the snapshot to complete, deletes the volume and prunes older stop
   snapshots beyond ``EBS_KEEP_SNAPSHOTS``;
2. the next start (``prepare``) passes the newest completed snapshot as
   ``snapshotId``.

All state lives on AWS, in tags: a volume carries the instance and the start
attempt's ``clientToken``; a snapshot carries the instance and a ``sequence``
one above every earlier snapshot of the instance. Every step is idempotent and
derived from what EC2 lists, so a service that dies anywhere (after StopTask,
after CreateSnapshot, before DeleteVolume) resumes on the next pass:

- a volume still in the account holds newer data than any snapshot (it is
  deleted only after its snapshot completed): no start happens while one exists
  (``prepare`` saves it first), except the volume of the very start attempt being
  retried (same token: RunTask returns that task again);
- a pending newest snapshot is waited for, never skipped for an older one;
- the newest snapshot is never pruned; ``remove`` (delete without keep_data)
  is the only thing that deletes it;
- snapshots a chroma-orch snapshot owns (tag ``chroma-orch:snapshot``,
  ``ebs_snapshots.py``) are not the instance's lineage: nothing here lists, prunes
  or deletes them. A restore puts a copy of one into the lineage (kind
  ``restore``), which then ages like a stop snapshot.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from chroma_orch.runtimes.base import InstanceSpec, RuntimeUnavailableError
from chroma_orch.runtimes.ecs.api import EcsApi
from chroma_orch.runtimes.ecs.settings import EcsSettings
from chroma_orch.runtimes.ecs.tasks import (
    TAG_GENERATION,
    TAG_INSTANCE,
    TAG_TENANT,
    VOLUME_NAME,
    instance_tags,
)
from chroma_orch.runtimes.ecs.throttle import error_code

log = logging.getLogger(__name__)

TAG_START = "chroma-orch:start"
TAG_SEQUENCE = "chroma-orch:sequence"
TAG_KIND = "chroma-orch:kind"
TAG_OWNER = "chroma-orch:snapshot"
"""On an EBS snapshot a snapshot row owns: that row's id."""
STOP_KIND = "stop"
RESTORE_KIND = "restore"
TAG_RESTORE = "chroma-orch:restore"
"""On a restore's copy: the snapshot row it restored (``ebs_snapshots.py``)."""
_GONE = frozenset({"InvalidVolume.NotFound", "InvalidSnapshot.NotFound"})
_NEVER = datetime.min.replace(tzinfo=UTC)  # (a volume EC2 gave no CreateTime: oldest)


@dataclass(frozen=True)
class Snapshot:
    id: str
    state: str
    volume_id: str
    sequence: int
    kind: str
    restore: str = ""


def _tags(item: Mapping[str, Any]) -> dict[str, str]:
    return {str(t["Key"]): str(t["Value"]) for t in item.get("Tags") or []}


def _snapshot(raw: Mapping[str, Any]) -> Snapshot:
    tags = _tags(raw)
    sequence = tags.get(TAG_SEQUENCE, "0")
    return Snapshot(
        id=str(raw["SnapshotId"]),
        state=str(raw.get("State") or "pending"),
        volume_id=str(raw.get("VolumeId") or ""),
        sequence=int(sequence) if sequence.isdigit() else 0,
        kind=tags.get(TAG_KIND, ""),
        restore=tags.get(TAG_RESTORE, ""),
    )


class EbsVolumes:
    def __init__(self, api: EcsApi, settings: EcsSettings) -> None:
        self._api = api
        self._settings = settings

    def configuration(
        self, spec: InstanceSpec, token: str, snapshot_id: str | None
    ) -> list[dict[str, Any]]:
        """RunTask's ``volumeConfigurations`` for one start attempt."""
        settings = self._settings
        tags = [*instance_tags(settings, spec), {"key": TAG_START, "value": token}]
        managed: dict[str, Any] = {
            "roleArn": settings.ebs_role_arn,
            "sizeInGiB": settings.ebs_size_gib,
            "volumeType": settings.ebs_volume_type,
            "encrypted": True,
            "filesystemType": settings.ebs_filesystem_type,
            "tagSpecifications": [
                {"resourceType": "volume", "tags": tags, "propagateTags": "NONE"}
            ],
            "terminationPolicy": {"deleteOnTermination": False},
        }
        if snapshot_id:
            managed["snapshotId"] = snapshot_id
        return [{"name": VOLUME_NAME, "managedEBSVolume": managed}]

    async def prepare(self, instance_id: str, token: str) -> str | None:
        """The snapshot a start attempt (``token``) restores: the newest of the
        instance. Raises ``RuntimeUnavailableError`` while an earlier task's volume
        is not saved yet or the newest snapshot is still pending."""
        volumes = await self._volumes(instance_id)
        if any(_tags(v).get(TAG_START) != token for v in volumes):
            waiting = await self.save(instance_id)
            if waiting is not None:
                raise RuntimeUnavailableError(f"saving the data of the last task: {waiting}")
        snapshots = [s for s in await self._snapshots(instance_id) if s.state != "error"]
        if not snapshots:
            return None
        newest = max(snapshots, key=lambda s: s.sequence)
        if newest.state != "completed":
            raise RuntimeUnavailableError(f"snapshot {newest.id} is {newest.state}")
        return newest.id

    async def save(self, instance_id: str) -> str | None:
        """Advance saving the instance's detached volumes; None once none is left,
        else what is awaited (a volume still attached, a snapshot pending)."""
        volumes = await self._volumes(instance_id)
        if not volumes:
            return None
        busy = [v for v in volumes if v.get("State") != "available"]
        if busy:
            return f"volume {busy[0]['VolumeId']} is {busy[0].get('State')}"
        snapshots = await self._snapshots(instance_id)
        # one volume at a time, the oldest first: a newer volume's snapshot numbers
        # above an older one's, even when the older one's failed and is taken again
        # (saved side by side, two unsaved volumes took the same number, and a retry
        # of the older one's numbered above the newer: a start restored older data)
        for volume in sorted(volumes, key=lambda v: v.get("CreateTime") or _NEVER):
            if (waiting := await self._save_volume(volume, snapshots)) is not None:
                return waiting
        return None

    async def remove(self, instance_id: str) -> None:
        """Delete the instance's volumes and snapshots (a deleted instance's data)."""
        volumes = await self._volumes(instance_id)
        busy = [v["VolumeId"] for v in volumes if v.get("State") != "available"]
        if busy:
            raise RuntimeUnavailableError(f"volumes still attached: {', '.join(busy)}")
        for volume in volumes:
            await self._delete("DeleteVolume", VolumeId=volume["VolumeId"])
        for snapshot in await self._snapshots(instance_id):
            await self._delete("DeleteSnapshot", SnapshotId=snapshot.id)
        log.info("removed volumes and snapshots instance=%s", instance_id)

    async def _save_volume(
        self, volume: Mapping[str, Any], snapshots: list[Snapshot]
    ) -> str | None:
        volume_id = str(volume["VolumeId"])
        own = [s for s in snapshots if s.volume_id == volume_id and s.state != "error"]
        done = [s for s in own if s.state == "completed"]
        if done:
            await self._delete("DeleteVolume", VolumeId=volume_id)
            log.info("saved volume=%s snapshot=%s", volume_id, done[0].id)
            await self._prune(snapshots)
            return None
        if own:
            return f"snapshot {own[0].id} of {volume_id} is {own[0].state}"
        sequence = max((s.sequence for s in snapshots), default=0) + 1
        created = await self._create_snapshot(volume, sequence)
        return f"snapshot {created} of {volume_id} is pending"

    async def _create_snapshot(self, volume: Mapping[str, Any], sequence: int) -> str:
        source = _tags(volume)
        tags = {k: source[k] for k in (TAG_INSTANCE, TAG_TENANT, TAG_GENERATION) if k in source}
        tags |= {TAG_SEQUENCE: str(sequence), TAG_KIND: STOP_KIND}
        answer = await self._api.call(
            "CreateSnapshot",
            service="ec2",
            VolumeId=volume["VolumeId"],
            Description=f"chroma-orch {source.get(TAG_INSTANCE, '')} #{sequence}",
            TagSpecifications=[
                {
                    "ResourceType": "snapshot",
                    "Tags": [{"Key": k, "Value": v} for k, v in sorted(tags.items())],
                }
            ],
        )
        snapshot_id = str(answer["SnapshotId"])
        log.info("snapshotting volume=%s snapshot=%s", volume["VolumeId"], snapshot_id)
        return snapshot_id

    async def _prune(self, snapshots: list[Snapshot]) -> None:
        """Delete completed stop snapshots beyond the newest ``EBS_KEEP_SNAPSHOTS``
        (never the instance's newest snapshot)."""
        ranked = sorted(snapshots, key=lambda s: s.sequence, reverse=True)
        aged = (STOP_KIND, RESTORE_KIND)
        stops = [s for s in ranked[1:] if s.kind in aged and s.state == "completed"]
        for old in stops[max(self._settings.ebs_keep_snapshots - 1, 0) :]:
            await self._delete("DeleteSnapshot", SnapshotId=old.id)

    async def _delete(self, operation: str, **params: Any) -> None:
        try:
            await self._api.call(operation, service="ec2", **params)
        except Exception as exc:
            if error_code(exc) not in _GONE:
                raise

    async def _volumes(self, instance_id: str) -> list[dict[str, Any]]:
        """The instance's volumes not on their way out."""
        volumes = await self._describe("DescribeVolumes", "Volumes", instance_id)
        return [v for v in volumes if v.get("State") not in ("deleting", "deleted")]

    async def lineage(self, instance_id: str) -> list[Snapshot]:
        """The instance's own snapshots (stop and restore ones, never those a snapshot
        row owns)."""
        return await self._snapshots(instance_id)

    async def _snapshots(self, instance_id: str) -> list[Snapshot]:
        raw = await self._describe("DescribeSnapshots", "Snapshots", instance_id, OwnerIds=["self"])
        return [_snapshot(s) for s in raw if TAG_OWNER not in _tags(s)]

    async def _describe(
        self, operation: str, key: str, instance_id: str, **extra: Any
    ) -> list[dict[str, Any]]:
        params: dict[str, Any] = {
            "Filters": [{"Name": f"tag:{TAG_INSTANCE}", "Values": [instance_id]}],
            **extra,
        }
        found: list[dict[str, Any]] = []
        while True:
            page = await self._api.call(operation, service="ec2", **params)
            found.extend(page.get(key) or [])
            if not page.get("NextToken"):
                return found
            params["NextToken"] = page["NextToken"]
