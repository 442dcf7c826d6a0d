"""Reconcile one claimed instance: compare desired with observed, act, record.

Level-triggered: every decision is taken from the instance row and a fresh
observation of its server, never from what happened before, so a retry, a
crash of the service or a lost notification only delays convergence.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chroma_orch.db.models import Instance
from chroma_orch.domain.states import DesiredState, Phase, check_phase
from chroma_orch.events.log import commit, record_event
from chroma_orch.reconciler import queue
from chroma_orch.reconciler.ports import allocate_port, release_port, reserve_port
from chroma_orch.runtimes.base import (
    Endpoint,
    InstanceSpec,
    Observation,
    ObservedState,
    Runtime,
    StartFailedError,
)
from chroma_orch.settings import Settings

log = logging.getLogger(__name__)

_PORT_RACE_RETRIES = 3


class LeaseLostError(Exception):
    """Another replica owns the instance now; stop working on it."""


@dataclass
class Outcome:
    requeue_after: float | None = None
    """Seconds until the next look; None when converged (nothing is due)."""


def _endpoint_values(endpoint: Endpoint | None) -> dict[str, Any]:
    return {
        "endpoint_host": endpoint.host if endpoint else None,
        "endpoint_port": endpoint.port if endpoint else None,
    }


def _view(inst: Instance) -> dict[str, Any]:
    endpoint = None
    if inst.endpoint_host and inst.endpoint_port:
        endpoint = {"host": inst.endpoint_host, "port": inst.endpoint_port}
    failure = None
    if inst.failure_reason:
        failure = {"reason": inst.failure_reason, "message": inst.failure_message}
    return {
        "phase": inst.phase,
        "endpoint": endpoint,
        "failure": failure,
        "observed_generation": inst.observed_generation,
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
    ) -> None:
        self.inst = inst
        self.runtime = runtime
        self.sessions = sessions
        self.settings = settings
        self.owner = settings.reconciler.replica_id

    # -- recording ---------------------------------------------------------

    async def write(
        self,
        *,
        phase: Phase | None = None,
        settle: str | bool | None = False,
        event: tuple[str, dict[str, Any]] | None = None,
        port: str | int | None = None,
        **values: Any,
    ) -> None:
        """Write reconciler-owned columns (and a phase change with its event) at once.

        ``settle``: False leaves intents open; None settles them as succeeded; a
        string settles them as failed with that error. ``port``: "release" frees
        the instance's port, an int reserves exactly that one.
        """
        inst = self.inst
        before = _view(inst)
        if phase is not None and phase != inst.phase:
            check_phase(Phase(inst.phase), phase)
            values.update(phase=phase.value)
            values.setdefault("phase_changed_at", datetime.now(UTC))
        async with self.sessions() as session:
            if not await queue.fenced_update(session, inst.id, self.owner, values):
                raise LeaseLostError(str(inst.id))
            for key, value in values.items():
                setattr(inst, key, value)
            if port == "release":
                await release_port(session, inst.id)
            elif isinstance(port, int):
                await reserve_port(session, inst.id, port)
            if before != _view(inst):
                record_event(
                    session,
                    type="instance.phase_changed"
                    if before["phase"] != inst.phase
                    else "instance.status_changed",
                    instance_id=inst.id,
                    tenant_id=inst.tenant_id,
                    before=before,
                    after=_view(inst),
                )
            if event is not None:
                record_event(
                    session,
                    type=event[0],
                    instance_id=inst.id,
                    tenant_id=inst.tenant_id,
                    after=event[1],
                )
            if settle is not False:
                error = settle if isinstance(settle, str) else None
                await queue.settle_intents(session, inst.id, inst.observed_generation, error)
            await commit(session)

    # -- the decision --------------------------------------------------------

    async def reconcile(self) -> Outcome:
        inst = self.inst
        observation = await self._observe()
        desired = DesiredState(inst.desired_state)
        if desired is DesiredState.DELETED:
            return await self._delete(observation)
        if desired is DesiredState.STOPPED:
            return await self._stop(observation, final=Phase.STOPPED)
        return await self._run(observation)

    async def _observe(self) -> Observation | None:
        if self.inst.handle is None:
            return None
        key = str(self.inst.id)
        return (await self.runtime.poll({key: self.inst.handle})).get(key)

    def _live(self, observation: Observation | None) -> bool:
        return observation is not None and observation.state is not ObservedState.EXITED

    async def _halt(self, observation: Observation | None) -> None:
        """Stop the server if one is live (phase stopping while it goes)."""
        if self._live(observation) and self.inst.handle is not None:
            if self.inst.phase != Phase.STOPPING:
                await self.write(phase=Phase.STOPPING)
            await self.runtime.stop(self.inst.handle)
            await self.write(handle=None, **_endpoint_values(None))

    async def _stop(self, observation: Observation | None, final: Phase) -> Outcome:
        await self._halt(observation)
        await self.write(
            phase=final,
            handle=None,
            failure_reason=None,
            failure_message=None,
            observed_generation=self.inst.generation,
            settle=None,
            port="release",
            **_endpoint_values(None),
        )
        return Outcome()

    async def _delete(self, observation: Observation | None) -> Outcome:
        await self._halt(observation)
        await self.runtime.delete(str(self.inst.id), self.inst.handle, self.inst.keep_data)
        return await self._stop(None, final=Phase.DELETED)

    async def _run(self, observation: Observation | None) -> Outcome:
        inst = self.inst
        handle_generation = int((inst.handle or {}).get("generation", 0))
        if self._live(observation) and handle_generation < inst.restart_generation:
            await self._halt(observation)  # a restart was asked for: stop, then start anew
            observation = None
        if observation is None or observation.state is ObservedState.EXITED:
            if observation is not None and inst.phase in (Phase.RUNNING, Phase.STARTING):
                return await self._crashed(observation)
            if inst.phase == Phase.FAILED and inst.observed_generation == inst.generation:
                return Outcome()  # failed for this generation: wait for a new request
            return await self._start()
        if observation.state is ObservedState.RUNNING:
            return await self._mark_running(observation)
        if observation.state is ObservedState.STARTING:
            assert inst.handle is not None
            deadline = self._start_deadline()
            remaining = max(deadline - time.monotonic(), 0.0)
            ready = await self.runtime.wait_ready(inst.handle, remaining)
            return await self._settle_start(ready, deadline)
        return Outcome(requeue_after=self.settings.reconciler.observe_interval)  # stopping

    def _start_deadline(self) -> float:
        elapsed = (datetime.now(UTC) - self.inst.phase_changed_at).total_seconds()
        return time.monotonic() + max(self.settings.local.start_timeout - elapsed, 0.0)

    async def _start(self) -> Outcome:
        inst = self.inst
        for _ in range(_PORT_RACE_RETRIES):
            port = await self._reserve_port()
            await self.write(
                phase=Phase.STARTING,
                phase_changed_at=datetime.now(UTC),
                handle=None,
                **_endpoint_values(None),
            )
            spec = InstanceSpec(
                instance_id=str(inst.id),
                tenant_id=str(inst.tenant_id),
                name=inst.name,
                generation=inst.generation,
                port=port,
                options=inst.spec,
            )
            try:
                handle = await self.runtime.start(spec)
            except StartFailedError as exc:
                return await self._failed_attempt(exc.reason, exc.message)
            await self.write(handle=handle)
            deadline = time.monotonic() + self.settings.local.start_timeout
            ready = await self.runtime.wait_ready(handle, self.settings.local.start_timeout)
            if ready.state is not ObservedState.EXITED or ready.reason != "PortUnavailable":
                return await self._settle_start(ready, deadline)
            log.info("port taken, retrying instance=%s port=%s", inst.id, port)
            await self.write(handle=None, port="release")
        return await self._failed_attempt("PortUnavailable", "no usable port after retries")

    async def _reserve_port(self) -> int | None:
        if not self.runtime.allocates_ports:
            return None
        low, high = self.settings.local.ports
        async with self.sessions() as session:
            port = await allocate_port(session, self.inst.id, self.settings.local.host, low, high)
            await commit(session)
        return port

    async def _settle_start(self, observation: Observation, deadline: float) -> Outcome:
        """Act on how a start went: running, exited, or still starting."""
        if observation.state is ObservedState.RUNNING:
            return await self._mark_running(observation)
        if observation.state is ObservedState.EXITED:
            return await self._failed_attempt(
                observation.reason or "ProcessExited", observation.message or "server exited"
            )
        if time.monotonic() < deadline:
            return Outcome(requeue_after=self.settings.reconciler.observe_interval)
        assert self.inst.handle is not None
        await self.runtime.stop(self.inst.handle)
        return await self._fail(
            "StartTimeout",
            f"the server did not answer within {self.settings.local.start_timeout:g}s",
        )

    async def _mark_running(self, observation: Observation) -> Outcome:
        endpoint = observation.endpoint
        port = endpoint.port if endpoint and self.runtime.allocates_ports else None
        await self.write(
            phase=Phase.RUNNING,
            observed_generation=self.inst.generation,
            failure_reason=None,
            failure_message=None,
            settle=None,
            port=port,
            **_endpoint_values(endpoint),
        )
        return Outcome()

    async def _crashed(self, observation: Observation) -> Outcome:
        reason = observation.reason or "ProcessExited"
        message = observation.message or "the server exited"
        log.warning("instance exited instance=%s reason=%s", self.inst.id, reason)
        return await self._failed_attempt(reason, message)

    async def _failed_attempt(self, reason: str, message: str) -> Outcome:
        """A start failed or a server died: restart with backoff, or fail for good."""
        inst = self.inst
        limit = self.settings.reconciler.restart_limit
        if inst.restart_count >= limit:
            if inst.handle is not None:
                await self.runtime.stop(inst.handle)
            return await self._fail(
                reason, f"{message} (gave up after {inst.restart_count} restarts)"
            )
        delay = min(
            self.settings.reconciler.backoff_base * 2**inst.restart_count,
            self.settings.reconciler.backoff_max,
        )
        await self.write(
            phase=Phase.STARTING,
            handle=None,
            restart_count=inst.restart_count + 1,
            failure_reason=reason,
            failure_message=message,
            event=("instance.crashed", {"reason": reason, "message": message, "retry_in": delay}),
            **_endpoint_values(None),
        )
        return Outcome(requeue_after=delay)

    async def _fail(self, reason: str, message: str) -> Outcome:
        await self.write(
            phase=Phase.FAILED,
            handle=None,
            failure_reason=reason,
            failure_message=message,
            observed_generation=self.inst.generation,
            settle=f"{reason}: {message}",
            port="release",
            event=("instance.failed", {"reason": reason, "message": message}),
            **_endpoint_values(None),
        )
        return Outcome()


def requeue_time(outcome: Outcome) -> datetime | None:
    if outcome.requeue_after is None:
        return None
    return datetime.now(UTC) + timedelta(seconds=outcome.requeue_after)
