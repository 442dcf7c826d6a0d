"""Request and response models of guarded upgrades (``/v1/instances/{id}/upgrade``)."""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from chroma_orch.db.models import InstanceUpgrade, UpgradePhase
from chroma_orch.domain.schemas import FailureRead, _Input, _Output

VERSION_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$"
"""A Chroma version (an image tag's syntax: what both runtimes can name)."""


class UpgradeRequest(_Input):
    model_config = ConfigDict(json_schema_extra={"examples": [{"chroma_version": "1.5.9"}]})

    chroma_version: str = Field(
        pattern=VERSION_PATTERN,
        description="The Chroma version to run: one the instance's runtime and its tenant's "
        "plan allow.",
    )


class InstanceUpgradeRead(_Output):
    id: uuid.UUID = Field(description="The upgrade's id.")
    instance_id: uuid.UUID = Field(description="The instance upgraded.")
    tenant_id: uuid.UUID = Field(description="The tenant that owns the instance.")
    rollout_id: uuid.UUID | None = Field(
        None, description="The fleet rollout that asked for it, if one did."
    )
    phase: UpgradePhase = Field(
        description="pending (the baseline is taken next), upgrading (snapshot, restart on "
        "the new version), probing (the parity probe), then succeeded; or rolling_back, "
        "then rolled_back; cancelled when the instance was deleted first."
    )
    from_version: str | None = Field(None, description="The Chroma version it ran before.")
    to_version: str | None = Field(None, description="The Chroma version asked for.")
    snapshot_id: uuid.UUID | None = Field(
        None, description="The pre_upgrade snapshot: what a rollback restores."
    )
    differences: list[str] | None = Field(
        None, description="What the parity probe found different on the new version."
    )
    failure: FailureRead | None = Field(
        None,
        description="Why it rolled back (ParityMismatch, ServerDidNotStart, UpgradeTimeout, "
        "ProbeUnavailable, SnapshotFailed) or was cancelled.",
    )
    created_at: datetime = Field(description="When it was asked for.")
    started_at: datetime | None = Field(None, description="When the old server was stopped.")
    switched_at: datetime | None = Field(
        None, description="When the instance's spec became the new one."
    )
    completed_at: datetime | None = Field(None, description="When it ended.")

    @classmethod
    def of(cls, upgrade: InstanceUpgrade) -> InstanceUpgradeRead:
        failure = None
        if upgrade.failure_reason is not None:
            failure = FailureRead(
                reason=upgrade.failure_reason, message=upgrade.failure_message or ""
            )
        return cls(
            id=upgrade.id,
            instance_id=upgrade.instance_id,
            tenant_id=upgrade.tenant_id,
            rollout_id=upgrade.rollout_id,
            phase=UpgradePhase(upgrade.phase),
            from_version=upgrade.from_spec.get("chroma_version"),
            to_version=upgrade.to_spec.get("chroma_version"),
            snapshot_id=upgrade.snapshot_id,
            differences=upgrade.differences,
            failure=failure,
            created_at=upgrade.created_at,
            started_at=upgrade.started_at,
            switched_at=upgrade.switched_at,
            completed_at=upgrade.completed_at,
        )


class InstanceUpgradePage(BaseModel):
    items: list[InstanceUpgradeRead] = Field(description="The instance's upgrades, newest first.")
