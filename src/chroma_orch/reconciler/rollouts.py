"""The rollout loop: steps the due rollouts, in every replica.

A pass claims due rollouts (pending or running, ``next_step_at`` passed) one at a
time with ``FOR UPDATE SKIP LOCKED``, so replicas share them and never step one
twice at once, and steps each in its own transaction: settle the current wave's
active members, start its waiting ones up to ``max_concurrent`` (and under the
service's cap on concurrent starts), and once the wave is settled, halt the
rollout if more than ``error_budget`` of its members failed or rolled back, else
go on to the next wave after ``pause_seconds`` (succeeded after the last). Every
fact is in the database: a restarted service carries on where it stopped.
"""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chroma_orch.db.models import Instance, Rollout, RolloutMember
from chroma_orch.db.outbox import commit
from chroma_orch.domain.instances import InstancePolicy
from chroma_orch.domain.limits import STARTS_OWED
from chroma_orch.domain.rollout_schemas import (
    ACTIVE_ROLLOUT,
    FAILED_MEMBER,
    MemberState,
    RolloutKind,
    RolloutPlan,
    RolloutState,
    UpgradeRolloutCreate,
)
from chroma_orch.domain.rollouts import rollout_event
from chroma_orch.errors import TooManyStartsError
from chroma_orch.reconciler.rollout_members import Members, RequestUpgrade
from chroma_orch.runtimes.base import Runtime

log = logging.getLogger(__name__)

_OPEN = (MemberState.WAITING.value, MemberState.ACTIVE.value)


class RolloutRunner:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        policy: InstancePolicy,
        runtime: Runtime,
        upgrade: RequestUpgrade,
        batch: int = 20,
    ) -> None:
        self.sessions = sessions
        self.policy = policy
        self.runtime = runtime
        self.batch = batch
        self.upgrade = upgrade

    async def run_once(self) -> list[uuid.UUID]:
        """One pass: the rollouts stepped (each in its own transaction)."""
        stepped: list[uuid.UUID] = []
        tried: list[uuid.UUID] = []
        while len(tried) < self.batch:
            async with self.sessions() as session:
                rollout = await _claim(session, tried)
                if rollout is None:
                    break
                tried.append(rollout.id)
                try:
                    await self.step(session, rollout)
                    await commit(session)
                except Exception:
                    log.exception("rollout step failed rollout=%s", rollout.id)
                    continue
            stepped.append(rollout.id)
        return stepped

    async def step(self, session: AsyncSession, rollout: Rollout) -> None:
        """Move ``rollout`` on as far as it can go now."""
        if rollout.state == RolloutState.PENDING:
            _set_state(session, rollout, RolloutState.RUNNING, None)
            rollout_event(session, "wave_started", rollout, wave=0)
        plan = _plan(rollout)
        members = Members(session, rollout, self.policy, self.runtime, self.upgrade)
        wave = await _wave(session, rollout)
        for member in wave:
            if member.state == MemberState.ACTIVE:
                await _settle(members, rollout, member)
        await self._start(session, members, rollout, plan, wave)
        if any(member.state in _OPEN for member in wave):
            return
        failures = sum(1 for member in wave if member.state in FAILED_MEMBER)
        _finish_wave(session, rollout, plan, failures)

    async def _start(
        self,
        session: AsyncSession,
        members: Members,
        rollout: Rollout,
        plan: RolloutPlan,
        wave: list[RolloutMember],
    ) -> None:
        """Start waiting members while there is room for them."""
        active = sum(1 for member in wave if member.state == MemberState.ACTIVE)
        starting = await session.scalar(
            select(func.count()).select_from(Instance).where(STARTS_OWED)
        )
        room = min(
            plan.max_concurrent - active, self.policy.max_concurrent_starts - (starting or 0)
        )
        for member in (m for m in wave if m.state == MemberState.WAITING):
            if room <= 0:
                return
            try:
                if isinstance(plan, UpgradeRolloutCreate):
                    await members.start_upgrade(member, plan.chroma_version)
                else:
                    await members.start_restart(member)
            except TooManyStartsError:
                return  # the service's cap is full: on a later pass
            if member.state == MemberState.ACTIVE:
                room -= 1


async def _claim(session: AsyncSession, tried: list[uuid.UUID]) -> Rollout | None:
    query = (
        select(Rollout)
        .where(
            Rollout.state.in_([state.value for state in ACTIVE_ROLLOUT]),
            Rollout.next_step_at <= func.now(),
        )
        .order_by(Rollout.next_step_at)
        .limit(1)
        .with_for_update(skip_locked=True)
    )
    if tried:
        query = query.where(Rollout.id.not_in(tried))
    rollout: Rollout | None = await session.scalar(query)
    return rollout


def _plan(rollout: Rollout) -> RolloutPlan:
    if rollout.kind == RolloutKind.UPGRADE:
        return UpgradeRolloutCreate.model_validate(rollout.request)
    return RolloutPlan.model_validate(rollout.request)


async def _wave(session: AsyncSession, rollout: Rollout) -> list[RolloutMember]:
    """The current wave's members, in a fixed order."""
    found = await session.scalars(
        select(RolloutMember)
        .where(RolloutMember.rollout_id == rollout.id, RolloutMember.wave == rollout.current_wave)
        .order_by(RolloutMember.instance_id)
    )
    return list(found)


async def _settle(members: Members, rollout: Rollout, member: RolloutMember) -> None:
    if rollout.kind == RolloutKind.UPGRADE:
        await members.settle_upgrade(member)
    else:
        await members.settle_restart(member)


def _finish_wave(session: AsyncSession, rollout: Rollout, plan: RolloutPlan, failures: int) -> None:
    """The current wave is settled: halt, succeed, or go on to the next wave."""
    wave = rollout.current_wave
    if failures > plan.error_budget:
        message = (
            f"wave {wave}: {failures} members failed or rolled back; "
            f"the error budget is {plan.error_budget}"
        )
        _set_state(session, rollout, RolloutState.HALTED, message)
    elif wave + 1 >= len(plan.waves):
        _set_state(session, rollout, RolloutState.SUCCEEDED, None)
    else:
        rollout.current_wave = wave + 1
        starts_at = datetime.now(UTC) + timedelta(seconds=plan.pause_seconds)
        rollout.next_step_at = starts_at
        rollout_event(
            session,
            "wave_started",
            rollout,
            wave=wave + 1,
            starts_at=starts_at.isoformat(),
            failures_before=failures,
        )


def _set_state(
    session: AsyncSession, rollout: Rollout, state: RolloutState, message: str | None
) -> None:
    before = rollout.state
    rollout.state = state.value
    rollout.message = message
    if state not in ACTIVE_ROLLOUT:
        rollout.completed_at = datetime.now(UTC)
    rollout_event(
        session, "state_changed", rollout, before=before, state=state.value, message=message
    )
