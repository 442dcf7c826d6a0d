"""The heartbeat pass: liveness after start.

A runtime's ``poll`` says whether a server's process or task lives; a server can
live and answer nothing (hung, deadlocked, swapping). Every ``heartbeat.interval``
one replica at a time asks the runtime whether each running server answers its
health check (``Runtime.heartbeat``: Chroma's heartbeat; a large fleet in chunks
spread over half the interval) and counts the misses in a
row on the instance, in the database, so every replica agrees. A server that
answers is back to 0; at ``heartbeat.failures`` misses its instance is due, and the
reconciler restarts the server with reason ``Unresponsive``
(``InstanceReconciler._run``): a crash, counted against the restart budget.

A miss is counted at most once per half interval, so replicas taking turns at the
pass do not count one silence twice; and only for a server running since before
the pass began (a server started meanwhile is not blamed for its predecessor).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from datetime import timedelta

from sqlalchemy import Update, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chroma_orch.db.locks import LockKey, try_lock
from chroma_orch.db.models import Instance
from chroma_orch.db.rows import make_due
from chroma_orch.domain.states import DesiredState, Phase
from chroma_orch.reconciler import queue
from chroma_orch.runtimes.base import Endpoint, Runtime
from chroma_orch.settings import HeartbeatSettings

log = logging.getLogger(__name__)

_BATCH = 5000
_CHUNK = 250
"""Servers asked at once; the chunks of a batch are spread over ``_SPREAD`` of the
interval."""
_SPREAD = 0.5

UNRESPONSIVE = "Unresponsive"
"""The failure reason of a server restarted for missing its heartbeats."""


def unresponsive(inst: Instance, settings: HeartbeatSettings) -> bool:
    """Whether the instance's server missed enough heartbeats to be restarted."""
    return settings.enabled and inst.heartbeat_failures >= settings.failures


def unresponsive_message(settings: HeartbeatSettings) -> str:
    return (
        f"the server missed {settings.failures} heartbeats in a row (asked every "
        f"{settings.interval:g}s, each allowed {settings.timeout:g}s); its process or "
        "task was alive"
    )


class Round:
    """Where the next heartbeat pass starts: after the last id the previous one asked.
    A fleet above ``batch`` running servers is asked in a round of passes; without it
    the same ``batch`` rows (no order) came back every pass and the rest were never
    asked."""

    def __init__(self) -> None:
        self.after = queue.FIRST_ID

    @property
    def batch(self) -> int:
        return _BATCH

    def advance(self, ids: list[str]) -> None:
        last = max(ids, key=uuid.UUID) if ids else None
        self.after = uuid.UUID(last) if last and len(ids) == self.batch else queue.FIRST_ID


async def heartbeat_once(
    sessions: async_sessionmaker[AsyncSession],
    runtime: Runtime,
    settings: HeartbeatSettings,
    rounds: Round | None = None,
) -> list[uuid.UUID]:
    """One heartbeat pass; returns the instances it found unresponsive (marked due)."""
    if not settings.enabled:
        return []
    rounds = rounds if rounds is not None else Round()
    async with sessions() as session:
        if not await try_lock(session, LockKey.HEARTBEAT):
            return []  # another replica is asking right now
        servers = await _running(session, rounds)
        answered = await _ask(runtime, servers, settings)
        rounds.advance(list(servers))  # once asked: a failed pass asks this batch again
        missed = [uuid.UUID(key) for key, ok in answered.items() if not ok]
        await _answered(session, [uuid.UUID(key) for key, ok in answered.items() if ok])
        due = await _missed(session, missed, settings)
        await make_due(session, due, wake_replicas=False)
        await session.commit()
    if due:
        log.warning("unresponsive servers, restarting count=%d", len(due))
    return due


async def _ask(
    runtime: Runtime, servers: dict[str, Endpoint], settings: HeartbeatSettings
) -> dict[str, bool]:
    """The runtime's answers for ``servers``, asked in chunks of ``_CHUNK`` spread
    over ``_SPREAD`` of the interval. A batch asked at once was a burst of the
    replica's CPU every interval (at 10,000 instances, 5,000 HTTP probes in about a
    second) that the API's tail latency showed."""
    items = list(servers.items())
    chunks = [dict(items[n : n + _CHUNK]) for n in range(0, len(items), _CHUNK)]
    gap = settings.interval * _SPREAD / max(len(chunks), 1)
    answered: dict[str, bool] = {}
    for n, chunk in enumerate(chunks):
        started = time.monotonic()
        answered |= await runtime.heartbeat(chunk, settings.timeout)
        if n + 1 < len(chunks):
            await asyncio.sleep(max(gap - (time.monotonic() - started), 0.0))
    return answered


async def _running(session: AsyncSession, rounds: Round) -> dict[str, Endpoint]:
    """The address of the running servers nobody is working on, the round's next batch."""
    rows = await session.execute(
        select(Instance.id, Instance.endpoint_host, Instance.endpoint_port)
        .where(
            Instance.phase == Phase.RUNNING,
            Instance.desired_state == DesiredState.RUNNING,
            Instance.endpoint_host.is_not(None),
            Instance.endpoint_port.is_not(None),
            Instance.lease_owner.is_(None),
            Instance.id > rounds.after,
        )
        .order_by(Instance.id)
        .limit(rounds.batch)
    )
    return {str(r.id): Endpoint(str(r.endpoint_host), int(r.endpoint_port)) for r in rows}


async def _answered(session: AsyncSession, ids: list[uuid.UUID]) -> None:
    if ids:
        await session.execute(answered_write(ids))


def answered_write(ids: list[uuid.UUID]) -> Update:
    """Back to no misses for those of ``ids`` that had any. A pass answers for up to
    ``_BATCH`` servers, nearly all with none: the partial index ``ix_instances_missed``
    holds only the rows with misses, so this reads those, not the fleet (without it
    the planner chose a sequential scan of ``instances`` for a long list of ids)."""
    return (
        update(Instance)
        .where(Instance.id.in_(ids), Instance.heartbeat_failures > 0)
        .values(heartbeat_failures=0, heartbeat_failed_at=None)
    )


async def _missed(
    session: AsyncSession, ids: list[uuid.UUID], settings: HeartbeatSettings
) -> list[uuid.UUID]:
    """Count a miss for each of ``ids``; the ones that reached ``settings.failures``."""
    if not ids:
        return []
    recently = func.now() - timedelta(seconds=settings.interval / 2)
    counted = await session.execute(
        update(Instance)
        .where(
            Instance.id.in_(ids),
            Instance.phase == Phase.RUNNING,
            Instance.phase_changed_at < func.now(),  # the transaction's start: running before
            Instance.heartbeat_failed_at.is_(None) | (Instance.heartbeat_failed_at < recently),
        )
        .values(heartbeat_failures=Instance.heartbeat_failures + 1, heartbeat_failed_at=func.now())
        .returning(Instance.id, Instance.heartbeat_failures)
    )
    due = []
    for instance_id, failures in counted.all():
        log.warning("heartbeat missed instance=%s in_a_row=%d", instance_id, failures)
        if failures >= settings.failures:
            due.append(instance_id)
    return due
