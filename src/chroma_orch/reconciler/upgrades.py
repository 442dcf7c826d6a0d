"""Carry out an instance's guarded upgrade, in the instance's own pass, under its lease.

The request (``domain/upgrades.py``) wrote the upgrade (pending), its ``pre_upgrade``
snapshot and a new generation; nothing restarted yet. Each pass of the instance first
moves its open upgrade on, as far as the instance's state allows, then the pass goes
on as any other (the snapshot's quiesce, the restart, a restore), so every step that
stops, copies, restarts or restores a server is the one the rest of the reconciler
already makes crash-safe:

1. **pending**: once the old server runs and no other snapshot waits for a copy, the
   parity probe's baseline is recorded from it, and in the same transaction the
   instance's spec becomes the new one (``SWITCH_SPEC``). The same pass then takes the
   ``pre_upgrade`` snapshot, whose quiesce stops the old server, copies its data and
   starts the new one: one restart.
2. **upgrading**: once a server started after the switch runs (its handle is not the
   one the switch recorded) and the snapshot is ready, **probing**; a crash, a failed
   start, a failed snapshot or ``upgrades.timeout`` roll back.
3. **probing**: the probe asked of the new server must match the baseline:
   **succeeded**; a difference, or a server that cannot be probed, rolls back.
4. **rolling_back**: the old spec back as a new generation, with the snapshot's data
   to restore (the new server's data kept first as a ``pre_restore`` snapshot: writes
   it took are not lost); once the old server runs again, **rolled_back**, and the
   instance shows ``failure.reason = UpgradeRolledBack`` with what differed.

A delete cancels the upgrade. A crash of the service at any point resumes here: every
transition is one transaction, and the instance's spec is always the old or the new
one, never a mix.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chroma_orch.db import instance_writes as writes
from chroma_orch.db import snapshot_rows, upgrade_rows
from chroma_orch.db.instance_writes import Fence, FencedWrite
from chroma_orch.db.models import (
    Instance,
    InstanceUpgrade,
    Snapshot,
    SnapshotKind,
    SnapshotPhase,
    UpgradePhase,
)
from chroma_orch.db.outbox import commit
from chroma_orch.domain.states import DesiredState, Phase
from chroma_orch.reconciler import parity
from chroma_orch.runtimes.base import Endpoint
from chroma_orch.settings import UpgradeSettings

log = logging.getLogger(__name__)

ROLLED_BACK = "UpgradeRolledBack"
"""The instance's failure reason after a rollback."""
_PROBE_PAUSE = 1.0


class UpgradingInstance(Protocol):
    """What an upgrade needs of the instance's pass (``InstanceReconciler``)."""

    inst: Instance
    sessions: async_sessionmaker[AsyncSession]
    owner: str

    async def write(
        self,
        op: FencedWrite,
        *,
        along: Callable[[AsyncSession], Awaitable[bool]] | None = None,
        **values: Any,
    ) -> None: ...


class UpgradeWork:
    """One instance's open upgrade, for one pass."""

    def __init__(self, host: UpgradingInstance, settings: UpgradeSettings) -> None:
        self.host = host
        self.settings = settings
        self.snapshot: Snapshot | None = None
        """The upgrade's ``pre_upgrade`` snapshot, as this pass found it."""
        self.changed = False
        """Whether this pass changed the upgrade."""

    @property
    def inst(self) -> Instance:
        return self.host.inst

    @property
    def fence(self) -> Fence:
        return Fence(self.inst.id, self.host.owner)

    async def step(self) -> None:
        """Move the instance's open upgrade on as far as this pass can."""
        if self.inst.upgrade_id is None:
            return
        async with self.host.sessions() as session:
            upgrade = await upgrade_rows.fetch(session, self.inst.upgrade_id)
            self.snapshot = snapshot = await self._snapshot(session, upgrade)
        if upgrade is None:  # (its row is gone: nothing left to carry out)
            await self._end(None, UpgradePhase.CANCELLED)
            return
        if self.inst.desired_state != DesiredState.RUNNING:
            await self._end(
                upgrade, UpgradePhase.CANCELLED, "Cancelled", "the instance was deleted"
            )
            return
        if upgrade.phase == UpgradePhase.PENDING:
            await self._begin(upgrade)
        elif upgrade.phase == UpgradePhase.UPGRADING:
            await self._await_new_server(upgrade, snapshot)
        if upgrade.phase == UpgradePhase.PROBING:
            await self._probe(upgrade)
        elif upgrade.phase == UpgradePhase.ROLLING_BACK:
            await self._await_old_server(upgrade)

    async def _snapshot(
        self, session: AsyncSession, upgrade: InstanceUpgrade | None
    ) -> Snapshot | None:
        if upgrade is None or upgrade.snapshot_id is None:
            return None
        return await session.get(Snapshot, upgrade.snapshot_id)

    def progress(self) -> tuple[Any, ...]:
        """Where the instance and the upgrade's snapshot stand (``moved_on`` compares)."""
        inst = self.inst
        snapshot = None if self.snapshot is None else self.snapshot.phase
        return (inst.phase, inst.handle, inst.observed_generation, inst.generation, snapshot)

    async def moved_on(self, before: tuple[Any, ...]) -> bool:
        """Whether the pass must come back at once for the upgrade: it is still open,
        the instance's server runs (or failed), and this pass changed something (the
        upgrade's next step may follow; nothing else would wake the instance)."""
        inst = self.inst
        if inst.upgrade_id is None or inst.phase not in (Phase.RUNNING, Phase.FAILED):
            return False
        if self.changed:
            return True
        if self.snapshot is not None:  # (the rest of the pass may have taken it)
            async with self.host.sessions() as session:
                self.snapshot = await session.get(Snapshot, self.snapshot.id)
        return self.progress() != before

    # -- pending: the baseline, then the switch ---------------------------------------

    async def _begin(self, upgrade: InstanceUpgrade) -> None:
        inst = self.inst
        if inst.phase == Phase.FAILED:
            await self._end(
                upgrade,
                UpgradePhase.CANCELLED,
                "InstanceFailed",
                "the instance failed before its upgrade began",
            )
            return
        endpoint = self._endpoint()
        if inst.phase != Phase.RUNNING or endpoint is None or await self._other_capture(upgrade):
            return  # the pass brings the old server up (or takes the other copy) first
        try:
            baseline = await self._record(endpoint)
        except parity.ProbeUnavailableError as exc:
            await self._end(
                upgrade,
                UpgradePhase.CANCELLED,
                "ProbeUnavailable",
                f"the running server could not be probed: {exc}",
            )
            return
        now = datetime.now(UTC)
        values = {
            "phase": UpgradePhase.UPGRADING.value,
            "baseline": {"probe": baseline, "server": inst.handle},
            "started_at": now,
            "switched_at": now,
        }
        await self.host.write(
            writes.SWITCH_SPEC,
            along=self._change(upgrade, values),
            spec=upgrade.to_spec,
            restart_generation=inst.generation,
            restart_count=0,
        )
        log.info(
            "upgrade switched instance=%s to=%s", inst.id, upgrade.to_spec.get("chroma_version")
        )

    async def _other_capture(self, upgrade: InstanceUpgrade) -> bool:
        """Whether a snapshot older than the upgrade's waits for a copy: it is taken
        first, from the old server (which it restarts on the old spec)."""
        async with self.host.sessions() as session:
            first = await snapshot_rows.next_open(session, self.inst.id)
        return first is not None and first.id != upgrade.snapshot_id

    # -- upgrading: the new server comes up -----------------------------------------------

    async def _await_new_server(self, upgrade: InstanceUpgrade, snapshot: Snapshot | None) -> None:
        inst = self.inst
        if snapshot is None or snapshot.phase == SnapshotPhase.FAILED:
            why = (
                "the pre_upgrade snapshot failed"
                if snapshot
                else "the pre_upgrade snapshot is gone"
            )
            await self._roll_back(upgrade, "SnapshotFailed", why, restore=False)
            return
        if snapshot.phase != SnapshotPhase.READY:
            return  # the pass takes it first: a rollback restores it
        if inst.phase == Phase.FAILED or inst.restart_count > 0:
            message = inst.failure_message or "the server exited"
            reason = inst.failure_reason or "ProcessExited"
            await self._roll_back(
                upgrade, "ServerDidNotStart", f"the new version did not start: {reason}: {message}"
            )
            return
        if self._past_deadline(upgrade):
            await self._roll_back(
                upgrade,
                "UpgradeTimeout",
                f"the new version did not run within {self.settings.timeout:g}s",
            )
            return
        old_server = (upgrade.baseline or {}).get("server")
        started_since = inst.handle is not None and inst.handle != old_server
        if inst.phase == Phase.RUNNING and started_since:
            await self._change_alone(upgrade, {"phase": UpgradePhase.PROBING.value})

    def _past_deadline(self, upgrade: InstanceUpgrade) -> bool:
        switched = upgrade.switched_at or upgrade.created_at
        return (datetime.now(UTC) - switched).total_seconds() > self.settings.timeout

    # -- probing -------------------------------------------------------------------------

    async def _probe(self, upgrade: InstanceUpgrade) -> None:
        endpoint = self._endpoint()
        try:
            if endpoint is None:
                raise parity.ProbeUnavailableError("the new server has no address")
            after = await self._record(endpoint)
        except parity.ProbeUnavailableError as exc:
            await self._roll_back(
                upgrade, "ProbeUnavailable", f"the new version could not be probed: {exc}"
            )
            return
        baseline = (upgrade.baseline or {}).get("probe") or {}
        differences = parity.compare(baseline, after)
        if differences:
            await self._roll_back(
                upgrade, "ParityMismatch", "the new version answers differently", differences
            )
            return
        await self._end(upgrade, UpgradePhase.SUCCEEDED)
        log.info("upgrade succeeded instance=%s", self.inst.id)

    async def _record(self, endpoint: Endpoint) -> dict[str, Any]:
        """The probe's recording of the server at ``endpoint``, tried a few times."""
        settings = self.settings
        for attempt in range(settings.probe_attempts):
            try:
                return await parity.record(
                    endpoint.url,
                    collections=settings.probe_collections,
                    timeout=settings.probe_request_timeout,
                )
            except parity.ProbeUnavailableError:
                if attempt + 1 == settings.probe_attempts:
                    raise
                await asyncio.sleep(_PROBE_PAUSE)
        raise AssertionError("unreachable")

    def _endpoint(self) -> Endpoint | None:
        inst = self.inst
        if inst.endpoint_host is None or inst.endpoint_port is None:
            return None
        return Endpoint(inst.endpoint_host, inst.endpoint_port)

    # -- rolling back ----------------------------------------------------------------------

    async def _roll_back(
        self,
        upgrade: InstanceUpgrade,
        reason: str,
        message: str,
        differences: Sequence[str] = (),
        *,
        restore: bool = True,
    ) -> None:
        """The old spec back as a new generation, with the ``pre_upgrade`` data to load
        first (the new server's data kept as a ``pre_restore`` snapshot)."""
        inst = self.inst
        values = {
            "phase": UpgradePhase.ROLLING_BACK.value,
            "failure_reason": reason,
            "failure_message": message,
            "differences": list(differences) or None,
        }
        change = self._change(upgrade, values)

        async def along(session: AsyncSession) -> bool:
            if restore:
                await snapshot_rows.add(session, self._pre_restore(upgrade))
            return await change(session)

        generation = inst.generation + 1
        await self.host.write(
            writes.BEGIN_ROLLBACK,
            along=along,
            spec=upgrade.from_spec,
            generation=generation,
            restart_generation=generation,
            restart_count=0,
            restore_snapshot_id=upgrade.snapshot_id if restore else None,
            restore_generation=generation if restore else None,
        )
        log.warning(
            "upgrade rolling back instance=%s reason=%s message=%s", inst.id, reason, message
        )

    def _pre_restore(self, upgrade: InstanceUpgrade) -> Snapshot:
        """A ``pre_restore`` snapshot, in the store of the upgrade's own snapshot."""
        inst = self.inst
        assert self.snapshot is not None, "a rollback restores the pre_upgrade snapshot"
        return Snapshot(
            id=uuid.uuid4(),
            instance_id=inst.id,
            tenant_id=inst.tenant_id,
            kind=SnapshotKind.PRE_RESTORE.value,
            phase=SnapshotPhase.PENDING.value,
            store=self.snapshot.store,
            attempts=0,
        )

    async def _await_old_server(self, upgrade: InstanceUpgrade) -> None:
        inst = self.inst
        settled = inst.observed_generation == inst.generation and inst.restore_snapshot_id is None
        if not settled or inst.phase not in (Phase.RUNNING, Phase.FAILED):
            return
        message = self._rolled_back_message(upgrade)
        if inst.phase == Phase.FAILED:
            message += f"; the old version did not start again either: {inst.failure_message}"
        await self._end(upgrade, UpgradePhase.ROLLED_BACK, ROLLED_BACK, message)

    def _rolled_back_message(self, upgrade: InstanceUpgrade) -> str:
        versions = (upgrade.to_spec.get("chroma_version"), upgrade.from_spec.get("chroma_version"))
        message = f"upgrade to Chroma {versions[0]} rolled back to {versions[1]}: "
        message += upgrade.failure_message or upgrade.failure_reason or "it failed"
        if upgrade.differences:
            message += " (" + "; ".join(upgrade.differences[:5])
            more = len(upgrade.differences) - 5
            message += f"; and {more} more)" if more > 0 else ")"
        return message

    # -- writes ------------------------------------------------------------------------------

    async def _end(
        self,
        upgrade: InstanceUpgrade | None,
        phase: UpgradePhase,
        reason: str | None = None,
        message: str | None = None,
    ) -> None:
        """The upgrade over: its phase, and the instance free of it. A rollback's reason
        shows on the instance (``UpgradeRolledBack``); a cancellation's on the upgrade."""
        inst = self.inst
        values: dict[str, Any] = {"phase": phase.value, "completed_at": datetime.now(UTC)}
        shown = (reason, message) if phase is UpgradePhase.ROLLED_BACK else None
        if phase is UpgradePhase.CANCELLED:
            values |= {"failure_reason": reason, "failure_message": message}
        change = self._change(upgrade, values) if upgrade is not None else None
        await self.host.write(
            writes.END_UPGRADE,
            along=change,
            upgrade_id=None,
            failure_reason=shown[0] if shown else inst.failure_reason,
            failure_message=shown[1] if shown else inst.failure_message,
        )

    def _change(
        self, upgrade: InstanceUpgrade, values: Mapping[str, Any]
    ) -> Callable[[AsyncSession], Awaitable[bool]]:
        async def along(session: AsyncSession) -> bool:
            self.changed = True
            return await upgrade_rows.change(session, upgrade, values, self.fence)

        return along

    async def _change_alone(self, upgrade: InstanceUpgrade, values: Mapping[str, Any]) -> None:
        async with self.host.sessions() as session:
            if await upgrade_rows.change(session, upgrade, values, self.fence):
                await commit(session)
                self.changed = True
