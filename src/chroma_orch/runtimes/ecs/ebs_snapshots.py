"""chroma-orch snapshots of instances on EBS (``storage=ebs``): the ECS runtime's
``NativeSnapshots`` (docs/data.md "ECS").

An instance's data at rest is its newest lineage snapshot (``volumes.py``: a
stopped task's volume is snapshotted, then deleted). So:

- a snapshot of the instance (its task stopped, its volume saved) is a
  ``CopySnapshot`` of that newest snapshot, tagged with the instance, the tenant and
  the snapshot row's id (``chroma-orch:snapshot``). A copy within one account and
  Region copies no data and costs nothing while its encryption does not change
  ("Copy an Amazon EBS snapshot",
  https://docs.aws.amazon.com/ebs/latest/userguide/ebs-copy-snapshot.html): it
  shares the incremental blocks of the snapshot it copies. The owner tag keeps it
  out of the instance's lineage: the runtime's own volume lifecycle (prune,
  delete of an instance) never lists it, so never deletes it;
- a restore (or clone) copies a row's snapshot into the target instance's lineage
  as its newest (kind ``restore``, tagged with the row's id): the next start
  creates its volume from it (``snapshotId``) like from any stop snapshot;
- deleting the row deletes its EBS snapshot, and only one that carries the owner
  tag.

Every step is found again by its tags, so a call repeated after a crash goes on
where the last one stopped.
"""

from __future__ import annotations

import logging
from typing import Any

from chroma_orch.runtimes.base import NativeSnapshot
from chroma_orch.runtimes.ecs.api import EcsApi
from chroma_orch.runtimes.ecs.settings import EcsSettings
from chroma_orch.runtimes.ecs.tasks import TAG_INSTANCE, TAG_TENANT
from chroma_orch.runtimes.ecs.throttle import error_code
from chroma_orch.runtimes.ecs.volumes import (
    RESTORE_KIND,
    TAG_KIND,
    TAG_OWNER,
    TAG_RESTORE,
    TAG_SEQUENCE,
    EbsVolumes,
    Snapshot,
)

log = logging.getLogger(__name__)

SNAPSHOT_KIND = "snapshot"
_GONE = "InvalidSnapshot.NotFound"


class EbsSnapshots:
    """``runtimes.base.NativeSnapshots`` on EBS (see the module docstring)."""

    store = "ebs"

    def __init__(self, api: EcsApi, settings: EcsSettings, volumes: EbsVolumes) -> None:
        self._api = api
        self._settings = settings
        self._volumes = volumes

    async def take_snapshot(
        self, instance_id: str, tenant_id: str, snapshot_id: str
    ) -> NativeSnapshot | str:
        found = await self._owned(snapshot_id)
        if found is not None:
            return found
        waiting = await self._volumes.save(instance_id)
        if waiting is not None:
            return waiting
        newest = await self._newest(instance_id)
        if newest is None:
            return NativeSnapshot(None, "completed", 0, "the instance had no data yet")
        if newest.state != "completed":
            return f"snapshot {newest.id} is {newest.state}"
        tags = {TAG_INSTANCE: instance_id, TAG_TENANT: tenant_id, TAG_OWNER: snapshot_id}
        copy = await self._copy(newest.id, tags | {TAG_KIND: SNAPSHOT_KIND}, snapshot_id)
        log.info("snapshot instance=%s snapshot=%s ebs=%s of=%s",
                 instance_id, snapshot_id, copy, newest.id)  # fmt: skip
        return NativeSnapshot(copy, "pending")

    async def snapshot_state(self, location: str) -> NativeSnapshot:
        raw = await self._describe(location)
        if raw is None:
            return NativeSnapshot(location, "error", message=f"EBS snapshot {location} is gone")
        return _state(raw)

    async def load_snapshot(
        self, instance_id: str, tenant_id: str, location: str | None, restore_id: str
    ) -> str | None:
        waiting = await self._volumes.save(instance_id)  # else it would be newer
        if waiting is not None:
            return waiting
        lineage = [s for s in await self._volumes.lineage(instance_id) if s.state != "error"]
        if location is None:  # a snapshot of nothing: no data
            if lineage:
                await self._volumes.remove(instance_id)
            return None
        newest = max(lineage, key=lambda s: s.sequence, default=None)
        if newest is not None and newest.restore == restore_id:
            return None if newest.state == "completed" else f"copy {newest.id} is {newest.state}"
        sequence = max((s.sequence for s in lineage), default=0) + 1
        tags = {
            TAG_INSTANCE: instance_id,
            TAG_TENANT: tenant_id,
            TAG_SEQUENCE: str(sequence),
            TAG_KIND: RESTORE_KIND,
            TAG_RESTORE: restore_id,
        }
        copy = await self._copy(location, tags, f"restore {restore_id}")
        log.info("restoring instance=%s from=%s ebs=%s", instance_id, location, copy)
        return f"copying {location} to {copy}"

    async def delete_snapshot(self, location: str) -> None:
        """Delete the EBS snapshot a row owns (refuses one without the owner tag)."""
        state = await self._describe(location)
        if state is None:
            return
        if TAG_OWNER not in _tags(state):
            raise ValueError(f"EBS snapshot {location} is not a chroma-orch snapshot's")
        try:
            await self._api.call("DeleteSnapshot", service="ec2", SnapshotId=location)
        except Exception as exc:
            if error_code(exc) != _GONE:
                raise
        log.info("deleted snapshot ebs=%s", location)

    # -- helpers ---------------------------------------------------------------

    async def _newest(self, instance_id: str) -> Snapshot | None:
        lineage = [s for s in await self._volumes.lineage(instance_id) if s.state != "error"]
        return max(lineage, key=lambda s: s.sequence, default=None)

    async def _owned(self, snapshot_id: str) -> NativeSnapshot | None:
        answer = await self._api.call(
            "DescribeSnapshots",
            service="ec2",
            OwnerIds=["self"],
            Filters=[{"Name": f"tag:{TAG_OWNER}", "Values": [snapshot_id]}],
        )
        found = [_state(s) for s in answer.get("Snapshots") or []]
        return next((s for s in found if s.state != "error"), None)

    async def _describe(self, location: str) -> dict[str, Any] | None:
        try:
            answer = await self._api.call(
                "DescribeSnapshots", service="ec2", SnapshotIds=[location], OwnerIds=["self"]
            )
        except Exception as exc:
            if error_code(exc) == _GONE:
                return None
            raise
        snapshots = answer.get("Snapshots") or []
        return dict(snapshots[0]) if snapshots else None

    async def _copy(self, source: str, tags: dict[str, str], what: str) -> str:
        answer = await self._api.call(
            "CopySnapshot",
            service="ec2",
            SourceSnapshotId=source,
            SourceRegion=self._settings.region,
            Description=f"chroma-orch {what}",
            TagSpecifications=[
                {
                    "ResourceType": "snapshot",
                    "Tags": [{"Key": k, "Value": v} for k, v in sorted(tags.items())],
                }
            ],
        )
        return str(answer["SnapshotId"])


def _tags(raw: dict[str, Any]) -> dict[str, str]:
    return {str(t["Key"]): str(t["Value"]) for t in raw.get("Tags") or []}


def _state(raw: dict[str, Any]) -> NativeSnapshot:
    size = raw.get("FullSnapshotSizeInBytes")
    return NativeSnapshot(
        location=str(raw["SnapshotId"]),
        state=str(raw.get("State") or "pending"),
        size_bytes=int(size) if size is not None else None,
        message=str(raw.get("StateMessage") or ""),
    )
