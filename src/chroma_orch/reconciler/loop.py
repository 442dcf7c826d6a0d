"""The reconciler: claims due instances and reconciles them concurrently.

Loops in every replica: the work loop (woken by NOTIFY on intents, by finished
work, or by its interval), the liveness loop (observes running servers in
batches and marks the ones that changed as due), the exits loop (marks an
instance due as soon as the runtime says its server exited), the heartbeat loop
(asks running servers whether they still answer: ``reconciler/heartbeat.py``),
the lease loop (renews leases of work in flight) and the orphan sweep. Tests call
``run_once``, ``observe_once``, ``mark_exited_due``, ``heartbeat_once`` and
``collect_orphans`` directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chroma_orch.db.models import Instance
from chroma_orch.db.outbox import commit
from chroma_orch.db.rows import make_due
from chroma_orch.domain.snapshot_store import build_store
from chroma_orch.domain.states import DesiredState, Phase
from chroma_orch.loops import Loops
from chroma_orch.reconciler import queue, start_phases
from chroma_orch.reconciler.decisions import (
    Decision,
    LeaseLostError,
    RequeueAfter,
    released,
    requeue_time,
)
from chroma_orch.reconciler.heartbeat import Round, heartbeat_once
from chroma_orch.reconciler.instance import InstanceReconciler, stops_unrecorded
from chroma_orch.runtimes.base import Handle, Observation, ObservedState, Runtime, poll_rate
from chroma_orch.settings import Settings
from chroma_orch.snapshots.store import SnapshotStore
from chroma_orch.telemetry.context import bind
from chroma_orch.telemetry.metrics import RECONCILE_PASSES, RECONCILE_SECONDS

log = logging.getLogger(__name__)

_LOOPS = (
    "reconciler-work",
    "reconciler-observe",
    "reconciler-leases",
    "reconciler-orphans",
    "reconciler-heartbeat",
    "reconciler-exits",
)


_OBSERVE_BATCH = 5000
_POLL_SHARE = 0.5


def observe_batch(runtime: Runtime, interval: float) -> int:
    """Servers one liveness pass polls: 5,000; where the runtime's polls spend a
    rate-limited budget, what half of it polls in one ``interval`` (at least 100),
    the other half left to the reconciles' own polls. At ECS's DescribeTasks rate
    (20 calls/s of 100) and a 1 s interval that is 1,000: a round of 10,000 servers
    takes 10 s. Batches of 5,000 wanted 50 calls a second of a budget of 20: every
    start and stop waited behind them (bench/fleet.py at 10,000: 1,000 stops took
    104 s to settle, 1,000 starts 7x the simulated floor). Exits the runtime reports
    do not wait for the round (``mark_exited_due``)."""
    rate = poll_rate(runtime)
    if rate is None:
        return _OBSERVE_BATCH
    return max(100, min(_OBSERVE_BATCH, int(rate * interval * _POLL_SHARE)))


class Reconciler:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        runtime: Runtime,
        settings: Settings,
        store: SnapshotStore | None = None,
    ) -> None:
        self.sessions = sessions
        self.runtime = runtime
        self.settings = settings
        self.store = store if store is not None else build_store(settings)
        """Where the instances' snapshots are kept (default: as the settings say)."""
        self.config = settings.reconciler
        self.owner = self.config.replica_id
        self.lease = timedelta(seconds=self.config.lease_seconds)
        self._work_wake = asyncio.Event()
        self.observe_batch = observe_batch(runtime, self.config.observe_interval)
        """Servers one liveness pass polls at most; a larger fleet takes a round of passes."""
        self._observe_after = queue.FIRST_ID
        self.heartbeat_round = Round()
        self._inflight: dict[uuid.UUID, asyncio.Task[bool]] = {}
        self._saturated = False  # the last claim took all the capacity there was
        self._own_loops: Loops | None = None
        self._registry: Loops | None = None
        self._last_pass = time.monotonic()
        self._exited: set[uuid.UUID] = set()
        """Instances whose server the runtime said exited, not yet marked due."""
        self._exits_wake = asyncio.Event()
        runtime.on_exit(self._heard_exit)

    # -- wiring --------------------------------------------------------------

    def seconds_since_last_pass(self) -> float:
        """How long ago the work loop last completed a pass (readiness)."""
        return time.monotonic() - self._last_pass

    def wake(self, _payload: str = "") -> None:
        """Look for due work now (an intent was written, here or on another replica)."""
        self._work_wake.set()

    def register(self, loops: Loops) -> None:
        """Add the reconciler's loops to ``loops``; ``abandon`` when they have stopped."""
        config = self.config
        self._registry = loops
        work, observe, leases, orphans, heartbeat, exits = _LOOPS
        loops.add(work, self._work_loop)
        loops.every(observe, self.observe_once, config.observe_interval)
        loops.every(exits, self.mark_exited_due, config.observe_interval, self._exits_wake)
        loops.every(leases, self.renew_leases, config.lease_seconds / 3)
        loops.every(orphans, self.collect_orphans, config.orphan_interval)
        loops.every(heartbeat, self.heartbeat_once, self.settings.heartbeat.interval)

    async def start(self) -> None:
        """Run the loops on a registry of their own (tests and tools; the app registers
        them with the replica's other loops)."""
        self._own_loops = Loops()
        self.register(self._own_loops)
        await self._own_loops.__aenter__()

    async def stop(self) -> None:
        """Stop the reconciler's loops (on its own registry, or on the one it was
        registered with, whose other loops go on), then ``abandon`` work in flight."""
        own, self._own_loops = self._own_loops, None
        if own is not None:
            await own.__aexit__(None, None, None)
        elif self._registry is not None:
            await self._registry.cancel(list(_LOOPS))
        await self.abandon()

    async def abandon(self) -> None:
        """Abandon work in flight; its leases lapse for other replicas at once."""
        tasks = list(self._inflight.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._inflight:
            async with self.sessions() as session:
                await session.execute(
                    update(Instance)
                    .where(
                        Instance.id.in_(list(self._inflight)), Instance.lease_owner == self.owner
                    )
                    .values(lease_owner=None, lease_expires_at=None, next_reconcile_at=func.now())
                )
                await session.commit()
            self._inflight.clear()

    async def _work_loop(self) -> None:
        while True:
            self._work_wake.clear()
            try:
                claimed = await self.run_once()
                self._last_pass = time.monotonic()
                RECONCILE_PASSES.labels("work").inc()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("reconcile pass failed")
                claimed = 0
            if claimed and len(self._inflight) < self.config.concurrency:
                continue
            timeout = await self._seconds_until_due()
            try:  # not wait_for: on 3.11 it can swallow a cancellation (loops.py)
                async with asyncio.timeout(timeout):
                    await self._work_wake.wait()
            except TimeoutError:
                pass

    async def _seconds_until_due(self) -> float:
        try:
            async with self.sessions() as session:
                due = await queue.next_due(session, self.owner)
        except Exception:
            return self.config.resync_interval
        if due is None:
            return self.config.resync_interval
        seconds = float((due - datetime.now(UTC)).total_seconds())
        return min(max(seconds, 0.01), self.config.resync_interval)

    # -- passes --------------------------------------------------------------

    async def run_once(self) -> int:
        """Claim what is due (up to free capacity) and start reconciling it."""
        capacity = min(self.config.concurrency - len(self._inflight), self.config.batch_size)
        self._saturated = capacity <= 0
        if capacity <= 0:
            return 0
        async with self.sessions() as session:
            claimed = await queue.claim_due(session, self.owner, self.lease, capacity)
            await session.commit()
        self._saturated = len(claimed) >= capacity
        for inst in claimed:
            task = asyncio.create_task(self._reconcile(inst), name=f"reconcile-{inst.id}")
            self._inflight[inst.id] = task
            task.add_done_callback(self._done_callback(inst.id))
        return len(claimed)

    def _done_callback(self, instance_id: uuid.UUID) -> Callable[[asyncio.Task[bool]], None]:
        """Forget the finished pass; look for work again if there may be some now: it
        was requeued or asked for again, or work waits for the capacity it frees.
        (An instance converged and untouched meanwhile needs no new claim.)"""

        def done(task: asyncio.Task[bool]) -> None:
            self._inflight.pop(instance_id, None)
            ended_early = task.cancelled() or task.exception() is not None
            if self._saturated or ended_early or task.result():
                self._work_wake.set()

        return done

    async def drain(self) -> None:
        """Wait for the work in flight (for tests and benchmarks)."""
        while self._inflight:
            await asyncio.gather(*self._inflight.values(), return_exceptions=True)

    async def _reconcile(self, inst: Instance) -> bool:
        """Reconcile ``inst``; True when it may be due again soon."""
        with bind(instance=inst.id, tenant=inst.tenant_id):
            started = time.perf_counter()
            result, due = await self._reconcile_logged(inst)
            RECONCILE_SECONDS.labels(result).observe(time.perf_counter() - started)
        return due

    async def _reconcile_logged(self, inst: Instance) -> tuple[str, bool]:
        error: str | None = None
        try:
            worker = InstanceReconciler(
                inst,
                runtime=self.runtime,
                sessions=self.sessions,
                settings=self.settings,
                store=self.store,
            )
            decision = await worker.reconcile()
        except LeaseLostError:
            log.warning("lease lost instance=%s", inst.id)
            return "lease_lost", True
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("reconcile failed instance=%s", inst.id)
            error = f"{type(exc).__name__}: {exc}"[:500]
            delay = min(self.config.backoff_base * 2**inst.error_count, self.config.backoff_max)
            decision = RequeueAfter(delay)
        if error is not None or not released(decision):
            await self._release(inst, decision, error)  # requeued: look again
            return ("error" if error else "ok"), True
        return "ok", worker.due_again

    async def _release(self, inst: Instance, decision: Decision, error: str | None) -> None:
        async with self.sessions() as session:
            clear = error is None and inst.error_count > 0
            await queue.release(
                session,
                inst.id,
                self.owner,
                requeue_time(decision),
                error=error,
                clear_errors=clear,
            )
            await session.commit()

    async def renew_leases(self) -> None:
        async with self.sessions() as session:
            await queue.renew_leases(session, self.owner, list(self._inflight), self.lease)
            await session.commit()

    async def observe_once(self) -> int:
        """Observe every server nobody is working on, in one batched poll; mark the
        instances whose server changed (or whose start overran) as due."""
        async with self.sessions() as session:
            if not await queue.try_observer_lock(session):
                return 0  # another replica is observing right now
            live = await queue.live_to_observe(
                session, limit=self.observe_batch, after=self._observe_after
            )
            handles = {str(i.id): Handle.from_json(i.handle) for i in live if i.handle is not None}
            observed = await self.runtime.poll(handles) if handles else {}
            # the round moves on once this batch was polled (a failed poll retries it)
            full = len(live) == self.observe_batch
            self._observe_after = live[-1].id if full else queue.FIRST_ID
            changed = [i.id for i in live if self._changed(i, observed.get(str(i.id)))]
            if changed:
                log.info("servers changed, reconciling count=%d", len(changed))
                await make_due(session, changed, wake_replicas=False)
            await commit(session)
        if changed:
            self._work_wake.set()
        return len(changed)

    def _heard_exit(self, instance_id: str) -> None:
        with contextlib.suppress(ValueError):  # (an id of no instance: nothing to mark)
            self._exited.add(uuid.UUID(instance_id))
            self._exits_wake.set()

    async def mark_exited_due(self) -> int:
        """Mark the instances whose server the runtime said exited as due: their own
        pass observes the exit and acts. Every replica that heard it does so (marking
        due twice changes nothing). Before, an exit woke the liveness pass: at 10,000
        instances that pass polls a batch of 5,000 servers, within the runtime's
        describe budget (2.5 s a batch at ECS's), and the exit waited for the batch
        that held it (bench/fleet.py: crash-to-noticed p50 4.5 s, half of 100 crashes
        not seen in 5 s, for a 1 s liveness interval)."""
        exited, self._exited = self._exited, set()
        if not exited:
            return 0
        try:
            async with self.sessions() as session:
                due = await queue.mark_exited_due(session, exited)
                await commit(session)
        except BaseException:
            self._exited |= exited  # marked on the next pass
            raise
        if due:
            log.info("servers exited, reconciling count=%d", len(due))
            self._work_wake.set()
        return len(due)

    async def heartbeat_once(self) -> int:
        """Ask running servers for their heartbeat; restart the unresponsive ones."""
        settings = self.settings.heartbeat
        due = await heartbeat_once(self.sessions, self.runtime, settings, self.heartbeat_round)
        if due:
            self._work_wake.set()
        return len(due)

    def _changed(self, inst: queue.LiveServer, observation: Observation | None) -> bool:
        state = observation.state if observation else ObservedState.EXITED
        if inst.phase == Phase.RUNNING:
            # alive but not (yet) answering here: the heartbeat pass's question
            return state not in (ObservedState.RUNNING, ObservedState.STARTING)
        if inst.phase == Phase.STARTING:
            elapsed = (datetime.now(UTC) - inst.phase_changed_at).total_seconds()
            if start_phases.unrecorded(inst.start_phases, observation):
                return True  # the start got further: record the new phase
            return state is not ObservedState.STARTING or elapsed > self.runtime.start_timeout
        return state is ObservedState.EXITED  # stopping: done once it is gone

    async def collect_orphans(self) -> int:
        """Stop servers the runtime finds whose instance is unknown or should not run.
        Not where the instance's own pass lists them (a start that recorded no server:
        ``stops_unrecorded``): that pass stops the server and waits until it is gone
        before it goes on. Stopped here, the server was no longer listed by then (ECS
        lists the tasks it wants running), and a stop was marked done, or a delete
        emptied the data, while it still ran out its ``stopTimeout`` on that data (the
        sweep also runs at start-up, right after a replica died mid-start)."""
        found = await self.runtime.discover()
        if not found:
            return 0
        ids = [uuid.UUID(key) for key in found]
        async with self.sessions() as session:
            rows = (
                await session.execute(
                    select(
                        Instance.id,
                        Instance.desired_state,
                        Instance.phase,
                        Instance.handle,
                        Instance.launch_by,
                    ).where(Instance.id.in_(ids))
                )
            ).all()
        left = {
            row.id
            for row in rows
            if row.desired_state == DesiredState.RUNNING
            or stops_unrecorded(row.phase, row.handle is not None, row.launch_by)
        }
        orphans = [key for key in found if uuid.UUID(key) not in left]
        for key in orphans:
            log.warning("stopping orphan server instance=%s", key)
            await self.runtime.stop(found[key])
        return len(orphans)
