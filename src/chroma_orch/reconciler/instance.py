"""Reconcile one claimed instance: compare desired with observed, act, record.

Level-triggered: every decision is taken from the instance row and a fresh
observation of its server, never from what happened before, so a retry, a
crash of the service or a lost notification only delays convergence.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chroma_orch.db import instance_writes as writes
from chroma_orch.db import rows
from chroma_orch.db.instance_writes import Fence, FencedWrite
from chroma_orch.db.models import Instance, Snapshot, SnapshotKind, SnapshotPhase
from chroma_orch.db.outbox import commit, event_row
from chroma_orch.domain.states import Action, DesiredState, Phase, check_phase
from chroma_orch.domain.status import status_view
from chroma_orch.errors import NoPortAvailableError
from chroma_orch.reconciler import start_phases
from chroma_orch.reconciler.decisions import Decision, Done, Failed, LeaseLostError, RequeueAfter
from chroma_orch.reconciler.heartbeat import UNRESPONSIVE, unresponsive, unresponsive_message
from chroma_orch.reconciler.native_snapshots import NATIVE_POLL, NativeData, unsupported_detail
from chroma_orch.reconciler.restores import PRE_RESTORE_FAILED, load_beside_pre_restore
from chroma_orch.reconciler.snapshots import DataWork, RestoreFailure
from chroma_orch.reconciler.upgrades import UpgradeWork
from chroma_orch.runtimes.base import (
    Endpoint,
    ExitCause,
    Handle,
    InstanceSpec,
    LaunchTooLateError,
    Observation,
    ObservedState,
    Runtime,
    ServerSpec,
    StartFailedError,
    StartPhase,
    data_directories,
    native_snapshots,
)
from chroma_orch.settings import Settings
from chroma_orch.snapshots.store import SnapshotStore
from chroma_orch.telemetry.metrics import LAUNCH_TO_RUNNING

log = logging.getLogger(__name__)

Along = Callable[[AsyncSession], Awaitable[bool]]
"""Writes made in the same transaction as an instance's status write (True: written)."""

_PORT_RACE_RETRIES = 3
_QUICK_READY = 2.0
_QUIESCE_POLL = 0.2


def _later(recorded: datetime | None, new: datetime) -> datetime:
    """The later of ``launch_by`` as the row has it and a new start's."""
    return new if recorded is None or recorded < new else recorded


def stops_unrecorded(phase: str, recorded: bool, launch_by: datetime | None) -> bool:
    """Whether an instance's own pass lists the runtime's servers for one that no
    start recorded (``InstanceReconciler._stop_unrecorded``) before it stops, deletes
    or restores it, or starts it on a new token: no server is recorded, and a start
    launched or may launch one (it is "starting", or its ``launch_by`` is set)."""
    return not recorded and (phase == Phase.STARTING or launch_by is not None)


def _endpoint_values(endpoint: Endpoint | None) -> dict[str, Any]:
    return {
        "endpoint_host": endpoint.host if endpoint else None,
        "endpoint_port": endpoint.port if endpoint else None,
    }


class InstanceReconciler:
    """Drives one instance; every write is fenced on this replica's lease."""

    def __init__(
        self,
        inst: Instance,
        *,
        runtime: Runtime,
        sessions: async_sessionmaker[AsyncSession],
        settings: Settings,
        store: SnapshotStore,
    ) -> None:
        self.inst = inst
        self.runtime = runtime
        self.sessions = sessions
        self.settings = settings
        self.owner = settings.reconciler.replica_id
        self.data = DataWork(
            inst,
            Fence(inst.id, self.owner),
            files=data_directories(runtime),
            store=store,
            sessions=sessions,
            settings=settings.snapshots,
            work_root=settings.data_dir,
        )
        native = native_snapshots(runtime)
        self.native = NativeData(self.data, native) if native is not None else None
        """Snapshots the runtime takes natively (ECS: EBS), else None."""
        self.upgrade = UpgradeWork(self, settings.upgrades)
        """The instance's open guarded upgrade (``reconciler/upgrades.py``)."""
        self.due_again = False
        """Whether the write that gave the lease back found the instance due again
        (a request came in while this pass worked on it)."""
        self._launch_by_before = inst.launch_by
        """``launch_by`` as the row had it before this pass: an earlier attempt's (of a
        replica that lost its lease, maybe), which recording this pass's server does
        not end (``_launch_by_once_recorded``)."""
        self._snapshot_after_start = False
        """A native snapshot was captured in this pass, which then starts the server:
        the next pass sees the snapshot through."""

    # -- recording ---------------------------------------------------------

    async def write(
        self,
        op: FencedWrite,
        *,
        phase: Phase | None = None,
        event: tuple[str, dict[str, Any]] | None = None,
        error: str | None = None,
        more_events: Sequence[tuple[str, dict[str, Any]]] = (),
        along: Along | None = None,
        **values: Any,
    ) -> None:
        """Record ``op`` (a named status write of ``db.instance_writes``): its columns
        (``values``; the others it lists keep their current values), a phase change
        and the events the change makes, at once.

        ``error``: the error an operation that settles the intents fails them with
        (None: they succeeded). ``more_events``: further events (type, after).
        ``along``: further writes of the same transaction (e.g. the instance's upgrade
        row), made first; False from it (a fence lost) writes nothing.
        """
        inst = self.inst
        before = status_view(inst)
        if phase is not None and phase != inst.phase:
            check_phase(Phase(inst.phase), phase)
            values.update(phase=phase.value)
            values.setdefault("phase_changed_at", datetime.now(UTC))
        if "handle" in values and values["handle"] is None and inst.handle is not None:
            values["last_handle"] = inst.handle  # keep where its logs are
        for key, value in values.items():
            setattr(inst, key, value)
        columns = {column: getattr(inst, column) for column in op.columns}
        events = self._events(before, event, more_events)
        async with self.sessions() as session:
            if along is not None and not await along(session):
                raise LeaseLostError(str(inst.id))
            written = await op.run(
                session,
                Fence(inst.id, self.owner),
                columns,
                events=events,
                settle=(inst.observed_generation, error) if op.settles else None,
                alone=along is None,
            )
            if written is None:
                raise LeaseLostError(str(inst.id))
            if op.releases_lease:
                self.due_again = written.due
            await commit(session)  # commits nothing more: the write was one statement

    def _events(
        self,
        before: dict[str, Any],
        event: tuple[str, dict[str, Any]] | None,
        more: Sequence[tuple[str, dict[str, Any]]] = (),
    ) -> list[dict[str, Any]]:
        """The events of a write: the status change from ``before``, ``event``, and
        the ``more`` events."""
        inst = self.inst
        events = []
        if before != status_view(inst):
            changed = "phase_changed" if before["phase"] != inst.phase else "status_changed"
            events.append(
                event_row(
                    type=f"instance.{changed}",
                    instance_id=inst.id,
                    tenant_id=inst.tenant_id,
                    before=before,
                    after=status_view(inst),
                )
            )
        for kind, after in ([event] if event is not None else []) + list(more):
            events.append(
                event_row(type=kind, instance_id=inst.id, tenant_id=inst.tenant_id, after=after)
            )
        return events

    # -- the decision --------------------------------------------------------

    async def reconcile(self) -> Decision:
        await self.upgrade.step()
        before = self.upgrade.progress()
        decision = await self._converge()
        if await self.upgrade.moved_on(before) and not isinstance(decision, RequeueAfter):
            await self._mark_due()  # the upgrade's next step, at once: nothing else wakes it
        return decision

    async def _converge(self) -> Decision:
        inst = self.inst
        observation = await self._observe()
        desired = DesiredState(inst.desired_state)
        if desired is DesiredState.DELETED:
            return await self._delete(observation)
        if desired is DesiredState.STOPPED:
            return await self._stop(observation, final=Phase.STOPPED)
        if inst.restore_snapshot_id is not None:
            if (pending := await self.halt(observation)) is not None:
                return pending
            if (pending := await self._stop_unrecorded()) is not None:
                return pending
            if (pending := await self._restore()) is not None:
                return pending
            return await self._run(None)
        if self._launch_unrecorded():
            # a start that recorded no server yet may have one writing the data: the
            # start goes first, and the snapshots are taken on the next pass
            decision = await self._run(observation)
            if not isinstance(decision, RequeueAfter):  # (a requeue comes back anyway)
                await self._due_if_snapshots_wait()
            return decision
        if (pending := await self._snapshots(observation, resume=True)) is not None:
            return pending
        decision = await self._run(observation)
        if self._snapshot_after_start and not isinstance(decision, RequeueAfter):
            # the next pass sees the snapshot through (before, nothing woke a server
            # that came up at once: the snapshot stayed ``running`` once its EBS copy
            # had completed); a requeue (a backoff) comes back anyway
            await self._mark_due()
        return decision

    # -- data: snapshots and restores (``reconciler/snapshots.py``) ------------------

    async def _snapshots(
        self, observation: Observation | None, *, resume: bool = False
    ) -> Decision | None:
        """Carry out the open snapshots; a decision when the pass ends here (a server
        was quiesced for a copy, or a snapshot waits for the store). ``resume``: the
        instance should run (native snapshots: ``reconciler/native_snapshots.py``)."""
        data = self.data
        while (snapshot := await data.next_open()) is not None:
            if self.native is not None and self.native.handles(snapshot):
                step = await self.native.step(self, snapshot, observation, resume=resume)
                if step is False:
                    self._snapshot_after_start = True  # the pass starts the server
                    return None
                if step is not True:
                    return step
            elif snapshot.phase == SnapshotPhase.DELETING:
                if not await data.delete(snapshot):
                    break
            elif data.files is None:
                detail = unsupported_detail(self.runtime)
                await data.fail_unsupported(snapshot, self.runtime.name, detail)
            elif resume and self._stopped_for_us():
                return await self._quiesce(snapshot)  # one that died mid-quiesce: go on
            elif data.copy_of(snapshot) is None and self._live(observation):
                return await self._quiesce(snapshot)
            elif not await data.store_data(snapshot):
                break
            if snapshot.kind == SnapshotKind.SCHEDULED and snapshot.phase == SnapshotPhase.READY:
                await data.prune_scheduled()  # its schedule's keep, now it is done
        if data.retry_in is not None:
            return RequeueAfter(data.retry_in)
        return None

    def _launch_unrecorded(self) -> bool:
        return self.inst.phase == Phase.STARTING and self.handle is None

    async def _due_if_snapshots_wait(self) -> None:
        can_snapshot = self.data.files is not None or self.native is not None
        if can_snapshot and await self.data.next_open() is not None:
            await self._mark_due()

    async def _mark_due(self) -> None:
        """Due again at once, whatever this pass decides (its release keeps it; a
        pass that gave its lease back already wakes the loop all the same)."""
        async with self.sessions() as session:
            await rows.make_due(session, [self.inst.id], wake_replicas=False)
            await session.commit()
        self.due_again = True

    def _stopped_for_us(self) -> bool:
        """The server was stopped by this service (for a snapshot's copy, or a
        restart) and is gone: ``stopping`` with no server. For an instance that should
        run, a pass that died there left the start to come."""
        return self.inst.phase == Phase.STOPPING and self.handle is None

    async def _quiesce(self, snapshot: Snapshot) -> Decision:
        """Stop the live server, copy its data for ``snapshot`` and start it again at
        once (the pause clients see); the next pass packs the copy. A quiesce a dead
        pass left (the server stopped, the copy made or not) goes on from there: the
        server down no longer than the local copy takes, never while the store is
        written."""
        handle = self.handle
        if handle is not None:
            await self.runtime.stop(handle)
            after = await self._observe()
            if after is not None and after.state is not ObservedState.EXITED:
                return RequeueAfter(_QUIESCE_POLL)  # still stopping
            await self.write(
                writes.RECORD_QUIESCED,
                phase=Phase.STOPPING,  # (not ``starting``: that reads as a launch under way)
                handle=None,
                start_attempts=self.inst.start_attempts + 1,  # the next start: a new token
                **_endpoint_values(None),
            )
        if self.data.copy_of(snapshot) is None:
            await self.data.capture(snapshot)
        return await self.start_again()  # the next pass packs the copy

    async def start_again(self) -> Decision:
        """Start the server at once (after a stop for a snapshot's copy); the instance
        is due again after this pass, which may give its lease back running."""
        await self._mark_due()
        return await self._start()

    async def _restore(self) -> Decision | None:
        """Load the data the instance's restore names (its server gone), after its
        ``pre_restore`` snapshot; None once loaded, else the pass's decision. Local
        data directories are extracted while that snapshot is packed
        (``reconciler/restores.py``)."""
        inst, restore_id = self.inst, self.inst.restore_snapshot_id
        if restore_id is not None and self.native is None and self.data.files is not None:
            outcome = await load_beside_pre_restore(self.data, restore_id, self._snapshots(None))
        else:
            outcome = await self._restore_in_turn()
        if isinstance(outcome, RestoreFailure):
            return await self._restore_failed(outcome)
        if outcome is not None:
            return outcome
        loaded = {"snapshot_id": str(inst.restore_snapshot_id)}
        await self.write(
            writes.RECORD_DATA_LOADED,
            restore_snapshot_id=None,
            undelete_unloaded=False,
            event=("instance.restored", loaded),
        )
        return None

    async def _load_action(self) -> str | None:
        """The action that asked for the instance's pending load."""
        async with self.sessions() as session:
            return await rows.generation_action(
                session, self.inst.id, rows.load_generation(self.inst)
            )

    def _data_after_failed_load(self, action: str | None) -> str:
        """What data the instance has once the load ``action`` asked for failed: a
        restore's (and a rollback's) leave its own; an undelete's, a clone's and an
        import's leave it none, and say where the data it asked for still is."""
        inst = self.inst
        if action == Action.UNDELETE:
            return (
                f"it has no data: its snapshot {inst.restore_snapshot_id} is kept; "
                "restore that into it to try again"
            )
        if action == Action.CREATE:
            return f"it has no data; snapshot {inst.restore_snapshot_id} is unchanged"
        return "the instance kept its data"

    async def _restore_in_turn(self) -> Decision | RestoreFailure | None:
        """The ``pre_restore`` snapshot, then the load (a runtime's native snapshots)."""
        restore_id = self.inst.restore_snapshot_id
        if (pending := await self._snapshots(None)) is not None:
            return pending
        if await self.data.pre_restore_failed():
            return PRE_RESTORE_FAILED
        if restore_id is not None and self.native is not None:
            native_load = await self.native.load(restore_id)
            if isinstance(native_load, str):
                return RequeueAfter(NATIVE_POLL)  # the runtime still loads it
            return native_load
        if restore_id is not None:
            return await self.data.load(restore_id)
        return None

    async def _restore_failed(self, failure: RestoreFailure) -> Decision:
        action = await self._load_action()
        message = f"{failure.message} ({self._data_after_failed_load(action)})"
        # an undelete that loaded nothing leaves the instance no data, until a server
        # runs on it; a failed restore after it leaves that as it was
        unloaded = action == Action.UNDELETE or self.inst.undelete_unloaded
        await self.write(
            writes.MARK_RESTORE_FAILED,
            phase=Phase.FAILED,
            handle=None,
            failure_reason=failure.reason,
            failure_message=message,
            observed_generation=self.inst.generation,
            restore_snapshot_id=None,
            undelete_unloaded=unloaded,
            error=f"{failure.reason}: {message}",
            event=("instance.restore_failed", {"reason": failure.reason, "message": message}),
            **_endpoint_values(None),
        )
        return Failed(failure.reason)

    @property
    def handle(self) -> Handle | None:
        """The instance's handle, typed (the row keeps its JSON)."""
        return Handle.load(self.inst.handle)

    async def _observe(self) -> Observation | None:
        if (handle := self.handle) is None:
            return None
        key = str(self.inst.id)
        return (await self.runtime.poll({key: handle})).get(key)

    def _live(self, observation: Observation | None) -> bool:
        return observation is not None and observation.live

    async def halt(self, observation: Observation | None) -> Decision | None:
        """Stop the server if one is live. None once it is gone; else what the pass
        answers meanwhile: a requeue while the route drains, or converged while the
        server is still stopping (the liveness pass wakes the instance when it has
        exited)."""
        handle = self.handle
        if not self._live(observation) or handle is None:
            return None
        if self.inst.phase != Phase.STOPPING:
            await self.write(
                writes.RECORD_STOPPING,
                phase=Phase.STOPPING,
                start_attempts=self.inst.start_attempts + 1,  # the next start: a new token
            )
        draining = self._drain_left()
        if draining > 0:
            return RequeueAfter(draining)
        await self.runtime.stop(handle)
        after = await self._observe()
        if after is not None and after.state is not ObservedState.EXITED:
            return Done()
        await self.write(writes.RECORD_SERVER_GONE, handle=None, **_endpoint_values(None))
        return None

    async def _stop_unrecorded(self) -> Decision | None:
        """Before a stop, a delete or a restore touches the data: a start that recorded
        no server (its replica died between launching one and recording it) may have
        left one running on that data, which no handle reaches (``halt`` stops only a
        recorded one). The runtime's listing finds it, trusted once the launch is
        ``visibility_grace`` old, and it is stopped. Before, a restore then swapped the
        data under the live server and adopted it afterwards. Also where a later
        attempt failed or ran after one that may still launch (``launch_by`` set): the
        listing comes once the window closes (the stop's ``MARK_STOPPED`` clears it).

        The server found is recorded as the instance's, "stopping", and stopped by
        ``halt``: what comes next waits until it is gone, as after any stop (the
        liveness pass wakes the instance then). Before, the pass went on as soon as the
        stop was sent: on ECS with EFS the next task mounted the data while the found
        one was still stopping, up to its ``stopTimeout``."""
        if not stops_unrecorded(self.inst.phase, self.handle is not None, self.inst.launch_by):
            return None
        if (unsure := self._unrecorded_launch_window()) > 0:
            return RequeueAfter(unsure)
        key = str(self.inst.id)
        found = (await self.runtime.discover()).get(key)
        if found is None:
            return None
        seen = (await self.runtime.poll({key: found})).get(key)
        if not self._live(seen):
            return None
        log.warning("stopping a server no start recorded instance=%s", key)
        await self.write(
            writes.RECORD_FOUND_SERVER,
            phase=Phase.STOPPING,
            handle=found.to_json(),
            launch_by=None,
            start_attempts=self.inst.start_attempts + 1,  # the next start: a new token
            heartbeat_failures=0,
            heartbeat_failed_at=None,
        )
        return await self.halt(seen)

    async def _stop_launch_of_another_token(self) -> Decision | None:
        """Before a start on a new start token (a later attempt: a failed one moved
        ``start_attempts`` on): an earlier attempt's launch, on another token, may still
        come, until its ``launch_by`` (a replica that lost its lease while it waited to
        send its RunTask). ECS would answer it with a task of its own beside this
        start's, each on a volume of its own, and nothing stopped that one while the
        instance ran. So the start waits for the window to close and stops what the
        listing then shows (``_stop_unrecorded``). A start on the token of the
        pending launch waits for nothing: the runtime hands back what that launched
        (ECS's ``clientToken``, a local server's data directory lock)."""
        if self.inst.launch_by is None or self.inst.launch_token == self._start_token():
            return None
        return await self._stop_unrecorded()

    def _drain_left(self) -> float:
        """Seconds before a routable server may be stopped. Where the runtime does not
        choose addresses (ECS gives a stopped task's IP to whichever task comes next),
        the address must outlive every authorisation cached while it was routed:
        "stopping" ends routing, and the server keeps its address for the quarantine.
        (Local ports are quarantined by the allocator instead.)"""
        if self.runtime.allocates_ports or self.inst.endpoint_host is None:
            return 0.0
        stopping_for = (datetime.now(UTC) - self.inst.phase_changed_at).total_seconds()
        return max(self.settings.proxy.address_quarantine - stopping_for, 0.0)

    async def _stop(self, observation: Observation | None, final: Phase) -> Decision:
        if (pending := await self.halt(observation)) is not None:
            return pending
        if (pending := await self._stop_unrecorded()) is not None:
            return pending
        if self.inst.restore_snapshot_id is not None:  # stopped meanwhile: load the data
            pending = await self._restore()
        else:
            pending = await self._snapshots(None)
        if pending is not None:
            return pending
        return await self._mark_stopped(final)

    async def _mark_stopped(self, final: Phase, *, data_kept: bool | None = None) -> Decision:
        """``data_kept``: a delete's decision (``keep_data``: the data stays in place,
        asked for or kept because the ``pre_delete`` snapshot failed), which an
        undelete goes by; kept though not asked for, it stays only for an undelete
        (``data_kept_for_undelete``: the retention's end removes it). What was asked
        is the row's ``keep_data`` unless a delete's pass wrote it (with the flag: a
        later pass of the deleted instance, e.g. after one of its snapshots was
        deleted, found the data kept and must not take that for a request)."""
        inst = self.inst
        asked = inst.keep_data and not inst.data_kept_for_undelete
        await self.write(
            writes.MARK_STOPPED,
            phase=final,
            handle=None,
            failure_reason=None,
            failure_message=None,
            observed_generation=inst.generation,
            launch_by=None,  # no server; any launch of the window was listed and stopped
            keep_data=inst.keep_data if data_kept is None else data_kept,
            data_kept_for_undelete=bool(data_kept) and not asked,
            **_endpoint_values(None),
        )
        return Done(released=True)

    async def _delete(self, observation: Observation | None) -> Decision:
        if (pending := await self.halt(observation)) is not None:
            return pending
        if (pending := await self._stop_unrecorded()) is not None:
            return pending
        can_snapshot = self.data.files is not None or self.native is not None
        if can_snapshot and await self.data.next_open() is not None:
            # the pre_delete snapshot first, of data at rest: a server no handle records
            # (a start that died before saving it) is stopped too, the data kept
            await self.runtime.delete(str(self.inst.id), self.handle, keep_data=True)
        if (pending := await self._snapshots(None)) is not None:
            return pending
        if self.inst.restore_snapshot_id is not None:
            await self.write(writes.RECORD_DATA_LOADED, restore_snapshot_id=None)  # given up
        keep = self.inst.keep_data or await self._pre_delete_failed()
        await self.runtime.delete(str(self.inst.id), self.handle, keep)
        return await self._mark_stopped(Phase.DELETED, data_kept=keep)

    async def _pre_delete_failed(self) -> bool:
        """Whether the data must outlive the delete: its ``pre_delete`` snapshot failed.
        Not where the runtime cannot snapshot at all (every one fails ``Unsupported``):
        its deletes remove the data as they always did."""
        can_snapshot = self.data.files is not None or self.native is not None
        return can_snapshot and await self.data.pre_delete_failed()

    def _unrecorded_launch_window(self) -> float:
        """Seconds before a stop or delete may trust the runtime's listing. A start
        records "starting" (and ``launch_by``) before it launches and the handle after:
        with no handle, a replica that died or lost its lease in between may have
        launched a server, or may still launch one until ``launch_by`` (``_launch``),
        which the listing shows ``visibility_grace`` after the launch (ECS's eventual
        consistency). Whatever the phase: a later attempt that failed (a crash
        backoff, or failed for good), or that recorded its server, does not end an
        earlier one's (``_launch_by_once_recorded``). None: no launch pending (the
        migration gave rows starting with no server one)."""
        inst = self.inst
        if self.handle is not None or inst.launch_by is None:
            return 0.0
        left = (inst.launch_by - datetime.now(UTC)).total_seconds()
        return max(left + self.runtime.visibility_grace, 0.0)

    async def _run(self, observation: Observation | None) -> Decision:
        inst = self.inst
        handle = self.handle
        handle_generation = (handle.generation if handle is not None else None) or 0
        stopping = inst.phase == Phase.STOPPING  # e.g. started again while it drained
        hung = self._unresponsive()
        restart = stopping or hung or handle_generation < inst.restart_generation
        if restart and (self._live(observation) or hung):
            # a restart was asked for, a stop was under way, or the server stopped
            # answering: stop (drained, as any stop), then start anew. A hung server
            # may be gone by now (a runtime that reports "stopping" while it saves the
            # server's data, as ECS with EBS does): its restart is still Unresponsive,
            # a new start attempt with a token of its own, never a replay of the old one.
            if hung and inst.phase == Phase.RUNNING:
                inst.restart_count = self._budget_used()  # written with "stopping"
            if (pending := await self.halt(observation)) is not None:
                return pending
            if hung:
                return await self._failed_attempt(UNRESPONSIVE, self._hung_message())
            observation = None
        if observation is None or observation.state is ObservedState.EXITED:
            if observation is not None and inst.phase in (Phase.RUNNING, Phase.STARTING):
                return await self._crashed(observation)
            if inst.phase == Phase.FAILED and inst.observed_generation == inst.generation:
                return Done()  # failed for this generation: wait for a new request
            return await self._start()
        if observation.state is ObservedState.RUNNING:
            return await self._mark_running(observation)
        if observation.state is ObservedState.STARTING and inst.phase == Phase.RUNNING:
            return Done()  # alive, not answering here (yet): the heartbeat pass decides
        if observation.state is ObservedState.STARTING:
            assert handle is not None
            deadline = self._start_deadline()
            remaining = max(deadline - time.monotonic(), 0.0)
            ready = await self.runtime.wait_ready(handle, remaining)
            return await self._settle_start(ready, deadline)
        if inst.phase == Phase.RUNNING and inst.endpoint_host is not None:
            await self.write(writes.END_ROUTING, **_endpoint_values(None))  # stopping on its own
        return Done()  # stopping: the liveness pass wakes the instance once it exited

    def _unresponsive(self) -> bool:
        """The running server missed its heartbeats (``reconciler/heartbeat.py``); the
        count outlives the drain ("stopping") that precedes the restart."""
        running = self.inst.phase in (Phase.RUNNING, Phase.STOPPING)
        return running and unresponsive(self.inst, self.settings.heartbeat)

    def _hung_message(self) -> str:
        return unresponsive_message(self.settings.heartbeat)

    def _start_deadline(self) -> float:
        elapsed = (datetime.now(UTC) - self.inst.phase_changed_at).total_seconds()
        return time.monotonic() + max(self.runtime.start_timeout - elapsed, 0.0)

    async def _start(self) -> Decision:
        inst = self.inst
        if (pending := await self._stop_launch_of_another_token()) is not None:
            return pending
        for _ in range(_PORT_RACE_RETRIES):
            try:
                handle = await self._launch()
            except StartFailedError as exc:
                return await self._failed_attempt(exc.reason, exc.message, exc.cause)
            except NoPortAvailableError as exc:
                await self._launched_nothing()
                if exc.retry_after is None:
                    raise  # the pool is full: an error, retried with backoff
                log.info("waiting for a quarantined port instance=%s seconds=%.1f",
                         inst.id, exc.retry_after)  # fmt: skip
                return RequeueAfter(exc.retry_after)
            except LaunchTooLateError:
                await self._launched_nothing()
                raise  # retried with backoff, with a window of its own
            ready = await self._wait_ready(handle)
            if ready.state is not ObservedState.EXITED or ready.reason != "PortUnavailable":
                return await self._settle_start(ready, self._start_deadline())
            log.info("port taken, retrying instance=%s detail=%s", inst.id, ready.message)
            await self.write(writes.FORGET_SERVER, handle=None)
        return await self._failed_attempt("PortUnavailable", "no usable port after retries")

    async def _launch(self) -> Handle:
        """Record "starting" and start the server (a local one reserves its port:
        ``NoPortAvailableError`` when there is none yet).

        A crash or a lost lease after the spawn loses nothing: the next pass, here or
        on another replica, adopts the server through its data directory's lock (a
        local one) or its start token (ECS: ``_spec``, which a stop or a crash moves
        on).

        The runtime sends no launch later than its ``launch_budget`` after the
        "starting" recorded here (``InstanceSpec.launch_by``; its own retries
        included), and the row says until when (``launch_by``): a stop on another
        replica, after this one lost its lease, waits for that and the runtime's
        visibility grace (``_unrecorded_launch_window``) and then finds every server
        this start may have launched. Unbounded, a RunTask retried under throttling
        could launch after that stop had listed nothing and marked the instance
        stopped."""
        budget = self.runtime.launch_budget
        began = time.monotonic()  # before the recorded time: the deadline is within it
        recorded = datetime.now(UTC)
        await self.write(
            writes.RECORD_STARTING,
            phase=Phase.STARTING,
            phase_changed_at=recorded,
            launch_by=_later(self.inst.launch_by, recorded + timedelta(seconds=budget)),
            launch_token=self._start_token(),
            handle=None,
            start_phases={},
            **_endpoint_values(None),
        )
        return await self.runtime.start(self._spec(launch_by=began + budget))

    async def _launched_nothing(self) -> None:
        """The start raised before it launched anything: a stop need not wait for it."""
        await self.write(writes.END_LAUNCH, launch_by=self._launch_by_once_recorded())

    def _launch_by_once_recorded(self) -> datetime | None:
        """``launch_by`` once this pass's start is over (its server recorded, or the
        attempt failed): its own launch is not pending any more, an earlier attempt's
        may be (it may carry another start token, so ECS would answer it with a second
        task): kept while still ahead."""
        earlier = self._launch_by_before
        return earlier if earlier is not None and earlier > datetime.now(UTC) else None

    def _spec(self, launch_by: float) -> InstanceSpec:
        inst = self.inst
        return InstanceSpec(
            instance_id=str(inst.id),
            tenant_id=str(inst.tenant_id),
            name=inst.name,
            generation=inst.generation,
            options=inst.spec,
            server=ServerSpec.from_json(inst.spec),
            start_token=self._start_token(),
            launch_by=launch_by,
        )

    def _start_token(self) -> str:
        """The token of this start attempt (``InstanceSpec.start_token``): a launch on
        it is handed back by the runtime, not launched twice."""
        inst = self.inst
        return f"{inst.id.hex}-{inst.generation}-{inst.start_attempts}"

    async def _wait_ready(self, handle: Handle) -> Observation:
        """Give a fresh server ``_QUICK_READY`` seconds. Ready by then: its handle is
        saved with the running phase (a crash of the service in that window loses
        nothing: runtimes adopt on the next start). Otherwise the handle is saved now
        and the liveness pass, which observes all starting servers in one batch,
        wakes the instance when the server is up, gone, or late."""
        quick = min(_QUICK_READY, self.runtime.start_timeout)
        ready = await self.runtime.wait_ready(handle, quick)
        if ready.state is ObservedState.RUNNING:
            self.inst.handle = handle.to_json()
            return ready
        await self.write(
            writes.RECORD_HANDLE, handle=handle.to_json(), launch_by=self._launch_by_once_recorded()
        )
        return ready

    async def _settle_start(self, observation: Observation, deadline: float) -> Decision:
        """Act on how a start went: running, exited, or still starting."""
        if observation.state is ObservedState.RUNNING:
            return await self._mark_running(observation)
        if observation.state is ObservedState.EXITED:
            return await self._failed_attempt(
                observation.reason or "ProcessExited",
                observation.message or "server exited",
                observation.cause,
            )
        if time.monotonic() < deadline:
            await self._record_start_phases(observation)
            return Done()  # the liveness pass wakes the instance when that changes
        handle = self.handle
        assert handle is not None
        await self.runtime.stop(handle)
        return await self._fail(
            "StartTimeout",
            f"the server did not answer within {self.runtime.start_timeout:g}s",
        )

    async def _record_start_phases(self, observation: Observation) -> None:
        """Record the start phases ``observation`` reached that are new, each with
        its event (a start that got no further writes nothing)."""
        phases = start_phases.new_phases(self.inst, observation)
        if not phases:
            return
        started = self.inst.phase_changed_at
        await self.write(
            writes.RECORD_START_PHASES,
            start_phases=start_phases.merged(self.inst, phases),
            more_events=start_phases.events(started, phases),
        )
        start_phases.observe(self.runtime.name, started, phases)

    async def _mark_running(self, observation: Observation) -> Decision:
        phases: dict[StartPhase, datetime] = {}
        started = self.inst.phase_changed_at
        if self.inst.phase == Phase.STARTING:
            LAUNCH_TO_RUNNING.labels(self.runtime.name).observe(
                (datetime.now(UTC) - started).total_seconds()
            )
            phases = start_phases.new_phases(self.inst, observation)
        endpoint = observation.endpoint
        # a server that becomes running clears the last failure; one that was running
        # keeps what it shows (an upgrade's rollback: UpgradeRolledBack)
        kept = self.inst.phase == Phase.RUNNING
        await self.write(
            writes.MARK_RUNNING,
            phase=Phase.RUNNING,
            handle=self.inst.handle,
            observed_generation=self.inst.generation,
            failure_reason=self.inst.failure_reason if kept else None,
            failure_message=self.inst.failure_message if kept else None,
            capacity_waits=0,
            start_phases=start_phases.merged(self.inst, phases),
            more_events=start_phases.events(started, phases),
            heartbeat_failures=0,
            heartbeat_failed_at=None,
            undelete_unloaded=False,  # routed: clients write, the data is its own now
            launch_by=self._launch_by_once_recorded(),
            **_endpoint_values(endpoint),
        )
        start_phases.observe(self.runtime.name, started, phases)
        return Done(released=True)

    async def _crashed(self, observation: Observation) -> Decision:
        reason = observation.reason or "ProcessExited"
        message = observation.message or "the server exited"
        log.warning(
            "instance exited instance=%s reason=%s cause=%s",
            self.inst.id, reason, observation.cause,
        )  # fmt: skip
        return await self._failed_attempt(reason, message, observation.cause)

    def _budget_used(self) -> int:
        """Restarts counted so far; none once the server had run healthily for
        ``restart_budget_reset`` (the phase "running" began that long ago)."""
        inst = self.inst
        if inst.phase == Phase.RUNNING:
            ran = (datetime.now(UTC) - inst.phase_changed_at).total_seconds()
            if ran >= self.settings.reconciler.restart_budget_reset:
                return 0
        return inst.restart_count

    async def _failed_attempt(
        self, reason: str, message: str, cause: ExitCause = ExitCause.CRASH
    ) -> Decision:
        """A start failed or a server died: restart (at once when the platform stopped
        it, after a capacity backoff when it had no room, else with the crash backoff),
        or fail for good once crashes used up the budget."""
        used = self._budget_used()
        if cause is ExitCause.CRASH and used >= self.settings.reconciler.restart_limit:
            if (handle := self.handle) is not None:
                await self.runtime.stop(handle)
            return await self._fail(reason, f"{message} (gave up after {used} restarts)")
        delay, event = self._retry_plan(cause, used)
        await self.write(
            writes.RECORD_CRASH,
            phase=Phase.STARTING,
            handle=None,
            restart_count=used + 1 if cause is ExitCause.CRASH else used,
            start_attempts=self.inst.start_attempts + 1,
            capacity_waits=self.inst.capacity_waits + 1 if self._waits(cause) else 0,
            failure_reason=reason,
            failure_message=message,
            launch_by=self._launch_by_once_recorded(),  # this attempt's launch is over
            event=(event, {"reason": reason, "message": message, "retry_in": delay}),
            **_endpoint_values(None),
        )
        return RequeueAfter(delay)

    def _waits(self, cause: ExitCause) -> bool:
        """Whether the attempt ends a start that is waiting on the platform rather than
        crashing: no capacity, or a task the platform stopped before it ever ran (an
        interruption of a running server restarts at once)."""
        if cause is ExitCause.CAPACITY:
            return True
        return cause is ExitCause.INFRASTRUCTURE and self.inst.phase != Phase.RUNNING

    def _retry_plan(self, cause: ExitCause, used: int) -> tuple[float, str]:
        """Seconds before the next start, and the event that says so."""
        config = self.settings.reconciler
        if cause is ExitCause.INFRASTRUCTURE:
            if not self._waits(cause):
                return 0.0, "instance.interrupted"
            waits = self.inst.capacity_waits  # stopped again and again before it ran
            return min(config.backoff_base * 2**waits, config.backoff_max), "instance.interrupted"
        if cause is ExitCause.CAPACITY:
            waits = self.inst.capacity_waits
            delay = min(config.capacity_backoff_base * 2**waits, config.capacity_backoff_max)
            return delay, "instance.waiting_for_capacity"
        return min(config.backoff_base * 2**used, config.backoff_max), "instance.crashed"

    async def _fail(self, reason: str, message: str) -> Decision:
        await self.write(
            writes.MARK_FAILED,
            phase=Phase.FAILED,
            handle=None,
            failure_reason=reason,
            failure_message=message,
            observed_generation=self.inst.generation,
            launch_by=self._launch_by_once_recorded(),
            error=f"{reason}: {message}",
            event=("instance.failed", {"reason": reason, "message": message}),
            **_endpoint_values(None),
        )
        return Failed(reason)
