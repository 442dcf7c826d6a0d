"""Deleting an instance with its data kept for an undelete, purging, undeleting.

A delete writes, in the transaction of its intent, a ``pre_delete`` snapshot (the
reconciler takes it after the server stopped and before the runtime removes the
data). ``purge`` instead takes none and marks every snapshot of the instance
``deleting``: nothing of its data is left (also of a deleted one whose delete kept
its data in place: the purge is a new generation, whose delete removes it). An
undelete brings a deleted instance back with the data of its newest ready
``pre_delete`` snapshot, as a new generation (or on the data its delete kept in
place, when that delete's snapshot failed).
Services only flush; the caller commits.
"""

from __future__ import annotations

import uuid

import asyncpg
from sqlalchemy import func, select

from chroma_orch.db import rows, snapshot_rows
from chroma_orch.db.models import Instance, Intent, Snapshot
from chroma_orch.domain.instances import is_gone
from chroma_orch.domain.snapshot_states import SnapshotKind, SnapshotPhase
from chroma_orch.domain.snapshots import SnapshotService
from chroma_orch.domain.states import Action, DesiredState, Phase, check_action
from chroma_orch.errors import ConflictError, QuotaExceededError, ValidationFailedError


def _data_may_stay(instance: Instance) -> bool:
    """Whether the data of a deleted instance may outlive its delete: the delete kept
    it in place (``keep_data``: asked for, or its ``pre_delete`` snapshot failed), or
    is still under way and may yet keep it. A purge deletes it again then, as a new
    generation: the reconciler removes the data (a repeat would leave it)."""
    if instance.desired_state != DesiredState.DELETED:
        return False  # (a new delete anyway)
    settled = (
        instance.phase == Phase.DELETED and instance.observed_generation >= instance.generation
    )
    return instance.keep_data or not settled


def _kept_unasked(instance: Instance) -> bool:
    """Whether the deleted instance's data stays only for an undelete (its delete's
    ``pre_delete`` snapshot failed), to be purged once its window has passed: a
    delete asking ``keep_data`` then is a new generation, whose delete keeps it on
    request (a repeat would leave it to the purge)."""
    return instance.desired_state == DesiredState.DELETED and instance.data_kept_for_undelete


class DeletionService:
    def __init__(self, snapshots: SnapshotService) -> None:
        self.snapshots = snapshots
        self.instances = snapshots.instances
        self.session = snapshots.session

    async def delete(
        self, instance_id: uuid.UUID, *, keep_data: bool, purge: bool
    ) -> tuple[Instance, Intent]:
        """Delete (repeatable): a ``pre_delete`` snapshot with a new delete, or with
        ``purge`` none, and every snapshot of the instance purged."""
        if purge and keep_data:
            raise ValidationFailedError("purge=true removes the data: it cannot go with keep_data")
        instance = await self.instances.get(instance_id, for_update=True, deleted=True)
        generation = instance.generation
        unloaded = await self._undelete_unloaded(instance)
        anew = (purge and _data_may_stay(instance)) or (keep_data and _kept_unasked(instance))
        applied = await self.instances.apply(
            instance, Action.DELETE, keep_data=keep_data, anew=anew
        )
        assert applied is not None, "the instance is locked: its generation cannot move"
        if purge:
            await self._purge(instance)
        elif instance.generation != generation and self.snapshots.policy.can_snapshot:
            # a new delete, not a repeat; none where the runtime cannot copy data, nor
            # of an undelete not loaded (yet, or ever: its load failed): its data is
            # the pre_delete snapshot it would have loaded, which stays the newest
            # ready one (a snapshot of its data directory, empty by then, would be what
            # the next undelete loads)
            if not unloaded:
                await self.snapshots.add(instance, SnapshotKind.PRE_DELETE)
        return applied

    async def _undelete_unloaded(self, instance: Instance) -> bool:
        """Whether ``instance`` is being undeleted and has not loaded its data yet, or
        its undelete's load failed and no server has run since (a stop runs none, nor
        a start that failed): it has no data, the snapshot it was to load holds it."""
        if instance.undelete_unloaded:
            return True
        if instance.restore_snapshot_id is None:
            return False
        asked = rows.load_generation(instance)
        action = await rows.generation_action(self.session, instance.id, asked)
        return action == Action.UNDELETE

    async def undelete(self, instance_id: uuid.UUID) -> tuple[Instance, Intent]:
        """The deleted instance back with the data of its newest ready ``pre_delete``
        snapshot, or on the data its delete kept (its ``pre_delete`` failed); 409 while
        it is being deleted, without either, or when its name was taken meanwhile."""
        visible = await self.instances.get(instance_id, deleted=True)
        if is_gone(visible):  # room in the plan's quota for its spec (the lock before the row's)
            await self.instances.check_room(visible)
        instance = await self.instances.get(instance_id, for_update=True, deleted=True)
        check_action(Action.UNDELETE, DesiredState(instance.desired_state), Phase(instance.phase))
        source = await self._restorable(instance)
        if await self.instances.find_live(instance.tenant_id, instance.name) is not None:
            raise ConflictError(
                f"the tenant has a live instance named {instance.name!r}; delete or rename it "
                "before undeleting this one"
            )
        await self._check_quota(instance.tenant_id)
        try:
            applied = await self.instances.apply(instance, Action.UNDELETE, restore_from=source)
        except asyncpg.UniqueViolationError as exc:  # a same-named one created at once
            raise ConflictError(f"the tenant has a live instance named {instance.name!r}") from exc
        assert applied is not None, "the instance is locked: its generation cannot move"
        return applied

    async def _restorable(self, instance: Instance) -> uuid.UUID | None:
        """The snapshot an undelete loads: the newest ready ``pre_delete``; None when
        the delete kept the data in place (``keep_data``, which the reconciler sets
        when it kept the data because the ``pre_delete`` snapshot failed; or, for an
        instance deleted before it did, that snapshot's row still says so, if this
        delete took it: an earlier delete's failed one says nothing of this one's
        data): the undelete starts on that data. (Loading an older ready one replaced
        the newer data kept, with no copy of it.)"""
        if instance.keep_data:
            return None
        instance_id = instance.id
        asked = rows.first_asked(instance_id, instance.generation)  # this delete's only
        newest = await snapshot_rows.newest_phase(
            self.session, instance_id, SnapshotKind.PRE_DELETE.value, since=asked
        )
        if newest == SnapshotPhase.FAILED.value and self.snapshots.policy.can_snapshot:
            return None
        found = await self.session.scalar(
            select(Snapshot.id)
            .where(
                Snapshot.instance_id == instance_id,
                Snapshot.kind == SnapshotKind.PRE_DELETE.value,
                Snapshot.phase == SnapshotPhase.READY.value,
            )
            .order_by(Snapshot.created_at.desc())
            .limit(1)
            .with_for_update(read=True)  # not deleted before the undelete commits
        )
        if found is None:
            raise ConflictError(
                f"instance {instance_id} has no ready pre_delete snapshot to undelete from "
                "and no data kept (deleted with purge, or its runtime cannot snapshot)"
            )
        return found

    async def _check_quota(self, tenant_id: uuid.UUID) -> None:
        limit = self.instances.policy.max_per_tenant
        live = await self.session.scalar(
            select(func.count()).where(
                Instance.tenant_id == tenant_id, Instance.desired_state != DesiredState.DELETED
            )
        )
        if (live or 0) >= limit:
            raise QuotaExceededError(f"tenant has {live} instances; the limit is {limit}")

    async def _purge(self, instance: Instance) -> None:
        """Every snapshot of the instance to ``deleting`` (the reconciler removes their
        archives, then their rows), but one an instance is restoring (retention purges
        it later). One being written (by the reconciler) is waited for, not skipped."""
        doomed = await snapshot_rows.purgeable(self.session, [instance.id], skip_locked=False)
        for snapshot in doomed:
            await snapshot_rows.mark_deleting(self.session, snapshot)
        if doomed:
            await self.snapshots.make_due(instance.id)
