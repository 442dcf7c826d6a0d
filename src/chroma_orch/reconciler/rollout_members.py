"""One rollout member at a time: starting its restart or upgrade, and settling it
from what its instance (or its upgrade) shows.

A restart goes through ``InstanceService.apply`` (the API's path) and is done once
the instance runs at the generation it made (``target_generation``), failed if the
instance failed at it. An upgrade is a guarded upgrade (``domain/upgrades.py``) and
ends with it: succeeded, rolled back (counts against the wave's error budget) or
cancelled (skipped).
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable
from datetime import UTC, datetime
from typing import Protocol

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from chroma_orch.db import rows
from chroma_orch.db.models import (
    Instance,
    InstanceUpgrade,
    Rollout,
    RolloutMember,
    UpgradePhase,
)
from chroma_orch.domain.instances import InstancePolicy, InstanceService
from chroma_orch.domain.principal import SYSTEM
from chroma_orch.domain.rollout_schemas import MemberState
from chroma_orch.domain.rollouts import rollout_event
from chroma_orch.domain.snapshots import SnapshotPolicy, SnapshotService
from chroma_orch.domain.states import Action, DesiredState, Phase
from chroma_orch.domain.upgrades import UpgradeService
from chroma_orch.errors import AppError, InvalidTransitionError, TooManyStartsError
from chroma_orch.runtimes.base import Runtime


class RequestUpgrade(Protocol):
    """Opens a guarded upgrade of a locked instance (flushes only): ``upgrades_with``."""

    def __call__(
        self,
        session: AsyncSession,
        instance: Instance,
        chroma_version: str,
        runtime: Runtime,
        *,
        rollout_id: uuid.UUID | None = None,
    ) -> Awaitable[InstanceUpgrade]: ...


def upgrades_with(policy: InstancePolicy, snapshots: SnapshotPolicy) -> RequestUpgrade:
    """``RequestUpgrade`` through ``UpgradeService`` (as the API's requests go)."""

    async def request_upgrade(
        session: AsyncSession,
        instance: Instance,
        chroma_version: str,
        runtime: Runtime,
        *,
        rollout_id: uuid.UUID | None = None,
    ) -> InstanceUpgrade:
        instances = InstanceService(session, SYSTEM, policy)
        service = UpgradeService(SnapshotService(session, SYSTEM, instances, snapshots), runtime)
        return await service.upgrade(instance, chroma_version, rollout_id=rollout_id)

    return request_upgrade


_UPGRADE_OUTCOMES = {
    UpgradePhase.SUCCEEDED.value: MemberState.SUCCEEDED,
    UpgradePhase.ROLLED_BACK.value: MemberState.ROLLED_BACK,
    UpgradePhase.CANCELLED.value: MemberState.SKIPPED,
}


class Members:
    """Starts and settles the members of one rollout, in the caller's transaction."""

    def __init__(
        self,
        session: AsyncSession,
        rollout: Rollout,
        policy: InstancePolicy,
        runtime: Runtime,
        upgrade: RequestUpgrade,
    ) -> None:
        self.session = session
        self.rollout = rollout
        self.instances = InstanceService(session, SYSTEM, policy)
        self.runtime = runtime
        self.upgrade = upgrade

    def change(self, member: RolloutMember, state: MemberState, message: str | None) -> None:
        """Move ``member`` to ``state`` (and say so on the admins' stream)."""
        now = datetime.now(UTC)
        member.state, member.message = state.value, message
        if state is MemberState.ACTIVE:
            member.started_at = now
        elif state is not MemberState.WAITING:
            member.completed_at = now
        rollout_event(
            self.session,
            "member_changed",
            self.rollout,
            instance_id=str(member.instance_id),
            wave=member.wave,
            state=state.value,
            message=message,
        )

    async def start_restart(self, member: RolloutMember) -> None:
        """Restart the member's instance (``TooManyStartsError`` when the service's
        start cap is full: try again on a later pass)."""
        instance = await rows.fetch_instance(self.session, member.instance_id)
        if instance is None or instance.desired_state == DesiredState.DELETED:
            return self.change(member, MemberState.SKIPPED, "the instance was deleted")
        if instance.desired_state != DesiredState.RUNNING:
            return self.change(member, MemberState.SKIPPED, "the instance is stopped")
        try:
            applied = await self.instances.apply(instance, Action.RESTART)
        except InvalidTransitionError as exc:
            return self.change(member, MemberState.SKIPPED, str(exc))
        if applied is None:
            return None  # changed under us: on the next pass
        member.target_generation = instance.generation
        self.change(member, MemberState.ACTIVE, None)
        return None

    async def settle_restart(self, member: RolloutMember) -> None:
        instance = await rows.fetch_instance(self.session, member.instance_id)
        if instance is None or instance.desired_state == DesiredState.DELETED:
            return self.change(member, MemberState.SKIPPED, "the instance was deleted")
        target = member.target_generation or 0
        if instance.observed_generation < target:
            return None
        if instance.phase == Phase.RUNNING:
            return self.change(member, MemberState.SUCCEEDED, None)
        if instance.phase == Phase.FAILED:
            reason = instance.failure_reason or "failed"
            return self.change(member, MemberState.FAILED, f"{reason}: {instance.failure_message}")
        if instance.desired_state != DesiredState.RUNNING:
            return self.change(member, MemberState.SKIPPED, "the instance was stopped")
        return None

    async def start_upgrade(self, member: RolloutMember, version: str) -> None:
        instance = await rows.fetch_instance(self.session, member.instance_id, for_update=True)
        if instance is None or instance.desired_state == DesiredState.DELETED:
            return self.change(member, MemberState.SKIPPED, "the instance was deleted")
        if instance.desired_state != DesiredState.RUNNING:  # probed on a running server only
            return self.change(member, MemberState.SKIPPED, "the instance is stopped")
        if (instance.spec or {}).get("chroma_version") == version:
            return self.change(member, MemberState.SUCCEEDED, f"already on {version}")
        try:
            async with self.session.begin_nested():
                upgrade = await self.upgrade(
                    self.session, instance, version, self.runtime, rollout_id=self.rollout.id
                )
        except TooManyStartsError:
            raise
        except AppError as exc:  # refused (a conflict, a spec the plan forbids)
            return self.change(member, MemberState.FAILED, str(exc))
        member.upgrade_id = upgrade.id
        self.change(member, MemberState.ACTIVE, None)
        return None

    async def settle_upgrade(self, member: RolloutMember) -> None:
        if member.upgrade_id is None:
            return self.change(member, MemberState.SKIPPED, "its upgrade is gone")
        found = await self.session.execute(
            select(InstanceUpgrade.phase, InstanceUpgrade.failure_message).where(
                InstanceUpgrade.id == member.upgrade_id
            )
        )
        row = found.one_or_none()
        if row is None:
            return self.change(member, MemberState.SKIPPED, "its upgrade is gone")
        outcome = _UPGRADE_OUTCOMES.get(row.phase)
        if outcome is not None:
            self.change(member, outcome, row.failure_message)
        return None
