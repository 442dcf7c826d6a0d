"""Snapshots a runtime takes with its platform's own means (``runtimes.base.
NativeSnapshots``; ECS with EBS), carried out in the instance's pass under its lease
like the archive snapshots of ``reconciler/snapshots.py``.

The data must be at rest (Chroma's SQLite and HNSW files are not provably consistent
in a crash-consistent live block snapshot, docs/data.md "Consistency"): a running
server is stopped first, drained like any stop (``_halt``: on ECS a stopped task's
address goes to the next task), its data saved by the runtime, the snapshot started
(``take_snapshot``) and the server started again at once; the snapshot completes
meanwhile and is then ``ready``. A stopped instance is snapshotted without a start.

Row by row: ``pending`` → (capture) ``running`` with ``store`` and ``location`` set →
``ready`` once the platform says completed (``failed`` on error). A crash anywhere
resumes: the runtime finds a capture it started by the snapshot's id.
"""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime
from typing import Protocol

from chroma_orch.db.models import Snapshot
from chroma_orch.domain.snapshot_states import SnapshotPhase
from chroma_orch.reconciler.decisions import Decision, RequeueAfter
from chroma_orch.reconciler.snapshots import DataWork, RestoreFailure
from chroma_orch.runtimes.base import NativeSnapshot, NativeSnapshots, Observation


class InstanceServer(Protocol):
    """What a native snapshot needs of the instance's pass (``InstanceReconciler``):
    its server stopped as any stop is (drained), and started again."""

    async def halt(self, observation: Observation | None) -> Decision | None:
        """Stop the live server; None once it is gone, else the pass's decision."""
        ...

    async def start_again(self) -> Decision:
        """Start the server at once; the instance is due again after this pass."""
        ...


log = logging.getLogger(__name__)

NATIVE_POLL = 2.0
"""Seconds between looks at a platform snapshot being made (or data being saved)."""


class NativeData:
    """One instance's native snapshots, for one pass."""

    def __init__(self, data: DataWork, native: NativeSnapshots) -> None:
        self.data = data
        self.native = native

    def handles(self, snapshot: Snapshot) -> bool:
        """Whether this carries out ``snapshot`` (a delete only of its own store's)."""
        return snapshot.phase != SnapshotPhase.DELETING or snapshot.store == self.native.store

    async def step(
        self,
        r: InstanceServer,
        snapshot: Snapshot,
        observation: Observation | None,
        *,
        resume: bool,
    ) -> Decision | bool:
        """Advance ``snapshot``. True: go on with the next one; False: the pass goes
        on (the server starts); a decision: the pass ends with it. ``resume``: the
        instance should run (its server is started again after a capture)."""
        if snapshot.phase == SnapshotPhase.DELETING:
            await self._delete(snapshot)
            return True
        if snapshot.store == self.native.store and snapshot.location is not None:
            return True if await self._settle(snapshot) else RequeueAfter(NATIVE_POLL)
        halted = observation is not None and observation.live
        if halted and (pending := await r.halt(observation)) is not None:
            return pending
        if not await self._capture(snapshot):
            return RequeueAfter(NATIVE_POLL)
        if not resume:
            return True
        if not halted:
            return False  # no server ran: the pass starts one as it would have
        return await r.start_again()  # the next pass sees the snapshot through

    async def load(self, snapshot_id: uuid.UUID) -> RestoreFailure | str | None:
        """Make ``snapshot_id``'s data the instance's (its server gone): None once
        done, a str while awaited, a failure (the instance keeps its data)."""
        async with self.data.sessions() as session:
            snapshot = await session.get(Snapshot, snapshot_id)
        if snapshot is None or snapshot.phase != SnapshotPhase.READY:
            return RestoreFailure("SnapshotUnavailable", f"snapshot {snapshot_id} is not ready")
        if snapshot.store != self.native.store:
            return RestoreFailure(
                "Unsupported",
                f"snapshot {snapshot_id} is in the {snapshot.store} store; "
                f"this runtime restores {self.native.store} snapshots",
            )
        inst = self.data.inst
        return await self.native.load_snapshot(
            str(inst.id), str(inst.tenant_id), snapshot.location, str(snapshot.id)
        )

    async def _capture(self, snapshot: Snapshot) -> bool:
        """Start ``snapshot`` of the data at rest; False while it is still saved."""
        data, inst = self.data, self.data.inst
        await data.begin(snapshot)
        if snapshot.phase == SnapshotPhase.DELETING:  # purged meanwhile: deleted next
            return True
        taken = await self.native.take_snapshot(str(inst.id), str(inst.tenant_id), str(snapshot.id))
        if isinstance(taken, str):
            log.info("snapshot waits snapshot=%s instance=%s for=%s", snapshot.id, inst.id, taken)
            return False
        if taken.location is None:
            await self._ready(snapshot, taken)
        else:
            await data.change(snapshot, {"store": self.native.store, "location": taken.location})
        return True

    async def _settle(self, snapshot: Snapshot) -> bool:
        """Ready or failed once the platform has finished ``snapshot``; False meanwhile."""
        assert snapshot.location is not None
        state = await self.native.snapshot_state(snapshot.location)
        if state.state == "completed":
            await self._ready(snapshot, state)
        elif state.state == "error":
            await self.data.fail(snapshot, "SnapshotFailed", state.message or "EBS error")
        else:
            return False
        return True

    async def _ready(self, snapshot: Snapshot, state: NativeSnapshot) -> None:
        await self.data.change(
            snapshot,
            {
                "phase": SnapshotPhase.READY.value,
                "store": self.native.store,
                "location": state.location,
                "size_bytes": state.size_bytes,
                "failure_reason": None,
                "failure_message": None,
                "completed_at": datetime.now(UTC),
            },
        )
        log.info("snapshot ready snapshot=%s instance=%s location=%s",
                 snapshot.id, self.data.inst.id, state.location)  # fmt: skip

    async def _delete(self, snapshot: Snapshot) -> None:
        if snapshot.location is not None:
            await self.native.delete_snapshot(snapshot.location)
        await self.data.remove_row(snapshot)


def unsupported_detail(runtime: object) -> str:
    """Why ``runtime`` cannot snapshot its instances' data, as it says (or "")."""
    inner = getattr(runtime, "inner", runtime)
    return str(getattr(inner, "snapshots_unsupported", None) or "")
