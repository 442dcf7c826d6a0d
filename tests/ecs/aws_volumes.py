"""ECS-managed EBS volumes, which moto does not create: the part of the AWS-behaviour
layer (``aws_behaviour.py`` calls it) that stands in for them, on moto's own EC2.

moto accepts ``volumeConfigurations`` on RunTask and ignores them. What AWS does,
and this layer does in moto's EC2 backend (the moto server runs in the test
process), with the documentation each point follows:

- RunTask with a ``managedEBSVolume`` creates one EBS volume per task, in the
  task's subnet's availability zone, with the given size, type and encryption, from
  ``snapshotId`` when given, tagged with the ``tagSpecifications`` of resource type
  ``volume`` ("Use Amazon EBS volumes with Amazon ECS",
  https://docs.aws.amazon.com/AmazonECS/latest/developerguide/ebs-volumes.html;
  ``TaskManagedEBSVolumeConfiguration``,
  https://docs.aws.amazon.com/AmazonECS/latest/APIReference/API_TaskManagedEBSVolumeConfiguration.html)
  plus the reserved tags ``AmazonECSCreated`` / ``AmazonECSManaged``.
- While the task lives the volume is attached (EC2 state ``in-use``; the
  attachment names the task in ``AssociatedResource`` and has no instance id:
  EC2 ``VolumeAttachment``,
  https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_VolumeAttachment.html),
  and DescribeTasks lists an attachment of type ``AmazonElasticBlockStorage``
  whose details name the volume (ECS ``Attachment``,
  https://docs.aws.amazon.com/AmazonECS/latest/APIReference/API_Attachment.html).
- Once the task is ``STOPPED`` the volume is detached; with
  ``terminationPolicy.deleteOnTermination`` false it stays in the account
  (``available``), else ECS deletes it (``TaskManagedEBSVolumeTerminationPolicy``,
  https://docs.aws.amazon.com/AmazonECS/latest/APIReference/API_TaskManagedEBSVolumeTerminationPolicy.html).
  An attached volume cannot be deleted (EC2 ``VolumeInUse``; moto has that).
- A snapshot is ``pending`` for a while, then ``completed`` (EC2 ``CreateSnapshot``:
  "Snapshots occur asynchronously ... the snapshot status is pending until the
  snapshot is complete",
  https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_CreateSnapshot.html);
  moto completes them at once. Here they complete ``snapshot_seconds`` after
  creation (``hold_snapshots`` keeps them pending).
- ``CopySnapshot`` is asynchronous as well: the copy is ``pending`` until it
  completes (https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_CopySnapshot.html;
  a copy within one account and Region copies no data,
  https://docs.aws.amazon.com/ebs/latest/userguide/ebs-copy-snapshot.html). moto
  completes it at once; here it is pending like a new snapshot, and the layer
  records each copy's source (``copied``) for tests to follow the data.
- The layer refuses a RunTask whose ``snapshotId`` is unknown or not completed
  yet (``InvalidParameterException``): a runtime that restored from a snapshot
  not finished would be caught.

State changes happen when the layer sees any call (before it is answered), so
what the runtime reads is always up to date.
"""

from __future__ import annotations

import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

from moto.backends import get_backend

ACCOUNT = "123456789012"
ATTACHMENT_TYPE = "AmazonElasticBlockStorage"
DEFAULT_SNAPSHOT_SECONDS = 0.3
_SNAPSHOT_ID = re.compile(rb"<snapshotId>(snap-[0-9a-f]+)</snapshotId>")


@dataclass
class _FargateHost:
    """What a Fargate task's volume attachment has instead of an EC2 instance."""

    id: str | None = None


@dataclass
class _TaskAttachment:
    """An EC2 volume attachment to a Fargate task (moto's Volume reads ``status``
    and ``instance``; the serializer the other attributes)."""

    volume: Any
    associated_resource: str
    attach_time: Any = None
    instance: _FargateHost = field(default_factory=_FargateHost)
    instance_id: str | None = None
    device: str | None = None
    status: str = "attached"
    state: str = "attached"
    delete_on_termination: bool = False
    instance_owning_service: str = "ecs.amazonaws.com"

    @property
    def volume_id(self) -> str:
        return str(self.volume.id)


@dataclass
class ManagedVolume:
    task_arn: str
    region: str
    cluster: str
    volume_id: str
    name: str
    config: dict[str, Any]
    attached: bool = True


class ManagedVolumes:
    """The layer's record of the volumes it created for tasks (``reset`` per test)."""

    def __init__(self) -> None:
        self.snapshot_seconds = DEFAULT_SNAPSHOT_SECONDS
        self.hold_snapshots = False
        self.by_task: dict[str, list[ManagedVolume]] = {}
        self.created: list[str] = []
        """Volume ids in creation order."""
        self.copied: dict[str, str] = {}
        """Snapshot copies: copy id -> source snapshot id."""
        self._pending: dict[tuple[str, str], float] = {}  # (region, snapshot id) -> created

    def reset(self) -> None:
        self.snapshot_seconds = DEFAULT_SNAPSHOT_SECONDS
        self.hold_snapshots = False
        self.by_task.clear()
        self.created.clear()
        self.copied.clear()
        self._pending.clear()

    # -- RunTask ---------------------------------------------------------------

    def check(self, body: dict[str, Any], region: str) -> str | None:
        """Why a RunTask's volume configuration cannot be honoured (None: it can)."""
        for config in body.get("volumeConfigurations") or []:
            snapshot_id = (config.get("managedEBSVolume") or {}).get("snapshotId")
            if not snapshot_id:
                continue
            snapshot = _ec2(region).snapshots.get(snapshot_id)
            if snapshot is None:
                return f"snapshot {snapshot_id} does not exist"
            if snapshot.status != "completed":
                return f"snapshot {snapshot_id} is {snapshot.status}"
        return None

    def launched(self, body: dict[str, Any], answer: dict[str, Any]) -> None:
        """Create and attach the volumes of the tasks a RunTask launched."""
        configs = body.get("volumeConfigurations") or []
        for task in answer.get("tasks") or []:
            arn = str(task["taskArn"])
            region = arn.split(":")[3]
            cluster = str(task.get("clusterArn") or body.get("cluster")).rsplit("/", 1)[-1]
            for config in configs:
                managed = config.get("managedEBSVolume")
                if managed:
                    volume = self._create(region, arn, body, managed)
                    record = ManagedVolume(arn, region, cluster, volume, config["name"], managed)
                    self.by_task.setdefault(arn, []).append(record)

    def _create(self, region: str, task_arn: str, body: dict[str, Any], config: Any) -> str:
        ec2 = _ec2(region)
        subnet = body["networkConfiguration"]["awsvpcConfiguration"]["subnets"][0]
        volume = ec2.create_volume(
            size=int(config.get("sizeInGiB") or 1),
            zone_name=ec2.get_subnet(subnet).availability_zone,
            snapshot_id=config.get("snapshotId"),
            encrypted=bool(config.get("encrypted", True)),
            volume_type=config.get("volumeType") or "gp3",
        )
        tags = {"AmazonECSCreated": task_arn, "AmazonECSManaged": "true"}
        for spec in config.get("tagSpecifications") or []:
            if spec.get("resourceType") == "volume":
                tags |= {t["key"]: t["value"] for t in spec.get("tags") or []}
        ec2.create_tags([volume.id], tags)
        volume.attachment = _TaskAttachment(volume, task_arn, attach_time=volume.create_time)
        self.created.append(volume.id)
        return str(volume.id)

    # -- keeping up with time ----------------------------------------------------

    def sync(self) -> None:
        """Detach (and maybe delete) the volumes of stopped tasks; complete
        snapshots whose time has come."""
        for records in self.by_task.values():
            for record in records:
                if record.attached and _task_stopped(record):
                    self._detach(record)
        now = time.monotonic()
        for (region, snapshot_id), created in list(self._pending.items()):
            snapshot = _ec2(region).snapshots.get(snapshot_id)
            if snapshot is None:
                del self._pending[(region, snapshot_id)]
            elif not self.hold_snapshots and now - created >= self.snapshot_seconds:
                snapshot.status = "completed"
                del self._pending[(region, snapshot_id)]

    def _detach(self, record: ManagedVolume) -> None:
        record.attached = False
        ec2 = _ec2(record.region)
        volume = ec2.volumes.get(record.volume_id)
        if volume is None:
            return
        volume.attachment = None
        policy = record.config.get("terminationPolicy") or {}
        if policy.get("deleteOnTermination", True):
            ec2.delete_volume(record.volume_id)

    def snapshot_created(self, region: str, payload: bytes) -> bytes:
        """A CreateSnapshot moto answered: the snapshot is pending (in moto too)."""
        match = _SNAPSHOT_ID.search(payload)
        if match is None:
            return payload
        snapshot_id = match.group(1).decode()
        snapshot = _ec2(region).snapshots.get(snapshot_id)
        if snapshot is not None:
            snapshot.status = "pending"
            self._pending[(region, snapshot_id)] = time.monotonic()
        return re.sub(rb"<status>completed</status>", b"<status>pending</status>", payload)

    def fail_snapshot(self, region: str, snapshot_id: str) -> None:
        """The snapshot ends in ``error``, as EC2's can (``State``: pending |
        completed | error | ..., https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_Snapshot.html);
        moto's never do."""
        snapshot = _ec2(region).snapshots.get(snapshot_id)
        if snapshot is not None:
            snapshot.status = "error"
        self._pending.pop((region, snapshot_id), None)

    def snapshot_copied(self, region: str, body: bytes, payload: bytes) -> bytes:
        """A CopySnapshot moto answered: the copy is pending, its source recorded."""
        source = parse_qs(body.decode()).get("SourceSnapshotId", [""])[0]
        match = _SNAPSHOT_ID.search(payload)
        if match is not None:
            self.copied[match.group(1).decode()] = source
        return self.snapshot_created(region, payload)

    # -- DescribeTasks -------------------------------------------------------------

    def annotate(self, answer: dict[str, Any]) -> None:
        """Add each task's ``AmazonElasticBlockStorage`` attachment."""
        for task in answer.get("tasks") or []:
            for record in self.by_task.get(str(task["taskArn"]), []):
                task.setdefault("attachments", []).append(_attachment(record))


def _attachment(record: ManagedVolume) -> dict[str, Any]:
    config = record.config
    details = {
        "volumeId": record.volume_id,
        "volumeName": record.name,
        "roleArn": config.get("roleArn"),
        "sizeInGiB": config.get("sizeInGiB"),
        "volumeType": config.get("volumeType"),
        "filesystemType": config.get("filesystemType"),
        "snapshotId": config.get("snapshotId"),
        "deleteOnTermination": (config.get("terminationPolicy") or {}).get("deleteOnTermination"),
    }
    return {
        "id": str(uuid.uuid5(uuid.NAMESPACE_URL, record.volume_id)),
        "type": ATTACHMENT_TYPE,
        "status": "ATTACHED" if record.attached else "DELETED",
        "details": [
            {"name": name, "value": str(value).lower() if isinstance(value, bool) else str(value)}
            for name, value in details.items()
            if value is not None
        ],
    }


def _ec2(region: str) -> Any:
    return get_backend("ec2")[ACCOUNT][region]


def _task_stopped(record: ManagedVolume) -> bool:
    tasks = get_backend("ecs")[ACCOUNT][record.region].tasks.get(record.cluster, {})
    task = tasks.get(record.task_arn)
    return task is None or task.last_status == "STOPPED"
