"""Guarded upgrade requests: validate, write the upgrade, its ``pre_upgrade`` snapshot
and the instance's new generation, in one transaction. The reconciler carries the
upgrade out (``reconciler/upgrades.py``): it records the parity probe's baseline from
the running server, switches the spec, restarts, probes, and rolls back (the old spec
and the snapshot's data) when the new server does not answer as the old one did.
Services only flush; the caller commits.
"""

from __future__ import annotations

import uuid

from chroma_orch.db import upgrade_rows
from chroma_orch.db.models import Instance, InstanceUpgrade, UpgradePhase
from chroma_orch.domain.snapshot_states import SnapshotKind
from chroma_orch.domain.snapshots import SnapshotService
from chroma_orch.domain.specs import resolve_version
from chroma_orch.domain.states import Action, DesiredState, Phase
from chroma_orch.errors import (
    ConflictError,
    InvalidTransitionError,
    NotFoundError,
    UpgradeInProgressError,
)
from chroma_orch.runtimes.base import ServerSpec


class UpgradeService:
    def __init__(self, snapshots: SnapshotService, runtime: object) -> None:
        self.snapshots = snapshots
        self.instances = snapshots.instances
        self.session = snapshots.session
        self.runtime = runtime
        """The instances' runtime (its ``SpecSupport`` says which versions it runs)."""

    async def request(self, instance_id: uuid.UUID, chroma_version: str) -> InstanceUpgrade:
        """An upgrade of a visible instance (404 otherwise)."""
        instance = await self.instances.get(instance_id, for_update=True)
        return await self.upgrade(instance, chroma_version)

    async def upgrade(
        self, instance: Instance, chroma_version: str, *, rollout_id: uuid.UUID | None = None
    ) -> InstanceUpgrade:
        """Write an upgrade of ``instance`` (locked by the caller) to ``chroma_version``:
        the upgrade (pending), its ``pre_upgrade`` snapshot, and the instance's new
        generation naming it. Refused (409) while another upgrade, a restore or a
        start failure is under way, for an instance not meant to run, and for the
        version it already runs; 422 for a version the runtime cannot run."""
        self._check_state(instance)
        current, target = await self._specs(instance, chroma_version)
        self.snapshots.require_capable()
        snapshot = await self.snapshots.add(instance, SnapshotKind.PRE_UPGRADE)
        upgrade = await upgrade_rows.add(
            self.session,
            InstanceUpgrade(
                id=uuid.uuid4(),
                instance_id=instance.id,
                tenant_id=instance.tenant_id,
                rollout_id=rollout_id,
                phase=UpgradePhase.PENDING.value,
                from_spec=current.to_json(),
                to_spec=target.to_json(),
                snapshot_id=snapshot.id,
            ),
        )
        applied = await self.instances.apply(instance, Action.UPGRADE, upgrade_id=upgrade.id)
        assert applied is not None, "the instance is locked: its generation cannot move"
        return upgrade

    def _check_state(self, instance: Instance) -> None:
        if instance.upgrade_id is not None:
            raise UpgradeInProgressError(
                f"instance {instance.id} is being upgraded (upgrade {instance.upgrade_id})"
            )
        if instance.desired_state != DesiredState.RUNNING or instance.phase in (
            Phase.FAILED,
            Phase.DELETED,
        ):
            raise InvalidTransitionError(
                f"an upgrade is probed on a running server: start instance {instance.id} "
                f"first (desired {instance.desired_state}, phase {instance.phase}), or change "
                "its spec with PATCH /v1/instances/{id}"
            )
        if instance.restore_snapshot_id is not None:
            raise ConflictError(f"instance {instance.id} is being restored")

    async def _specs(
        self, instance: Instance, chroma_version: str
    ) -> tuple[ServerSpec, ServerSpec]:
        """The instance's spec as it runs, and the same on ``chroma_version`` (checked by
        the runtime and the tenant's plan)."""
        current, target = await resolve_version(
            self.session,
            self.runtime,
            instance.tenant_id,
            ServerSpec.from_json(instance.spec),
            chroma_version,
            default_plan=self.instances.policy.default_plan,
        )
        if current.chroma_version == chroma_version:
            raise ConflictError(f"instance {instance.id} already runs Chroma {chroma_version}")
        return current, target

    async def get(self, instance_id: uuid.UUID, upgrade_id: uuid.UUID) -> InstanceUpgrade:
        instance = await self.instances.get(instance_id, deleted=True)
        upgrade = await upgrade_rows.fetch(self.session, upgrade_id)
        if upgrade is None or upgrade.instance_id != instance.id:
            raise NotFoundError(f"upgrade {upgrade_id} not found")
        return upgrade

    async def list_for(self, instance_id: uuid.UUID) -> list[InstanceUpgrade]:
        instance = await self.instances.get(instance_id, deleted=True)
        return await upgrade_rows.for_instance(self.session, instance.id)
