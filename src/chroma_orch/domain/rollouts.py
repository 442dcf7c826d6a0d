"""Rollouts: fleet upgrades and rolling restarts in waves (admin only).

Creating one chooses its members at once (the live instances the selector matches)
and puts each in a wave: the selection is ordered by a hash of the instance id
(deterministic, and spread over tenants), and wave k holds the first
``ceil(p_k % of N)`` minus the earlier waves. The rollout loop
(``reconciler/rollouts.py``) carries it out. Services only flush; the caller commits.
"""

from __future__ import annotations

import math
import uuid
from collections import Counter
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Text, cast, func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from chroma_orch.db.models import Instance, Rollout, RolloutMember
from chroma_orch.db.outbox import record_event
from chroma_orch.domain.principal import Principal
from chroma_orch.domain.rollout_schemas import (
    ACTIVE_ROLLOUT,
    MemberState,
    RolloutKind,
    RolloutMemberRead,
    RolloutPlan,
    RolloutRead,
    RolloutSelector,
    RolloutState,
    UpgradeRolloutCreate,
    WaveRead,
)
from chroma_orch.domain.states import DesiredState
from chroma_orch.errors import InvalidTransitionError, NotFoundError, ValidationFailedError

_S = RolloutState
_TRANSITIONS: dict[str, tuple[tuple[RolloutState, ...], RolloutState]] = {
    "pause": ((_S.PENDING, _S.RUNNING), _S.PAUSED),
    "resume": ((_S.PAUSED,), _S.RUNNING),
    "cancel": ((_S.PENDING, _S.RUNNING, _S.PAUSED, _S.HALTED), _S.CANCELLED),
}
"""What each admin action needs the rollout to be in, and what it makes it."""


def assign_waves(count: int, waves: list[int]) -> list[int]:
    """The wave of each of ``count`` ordered members: wave k ends at ceil(p_k % of N)."""
    ends = [math.ceil(count * percent / 100) for percent in waves]
    assigned, wave = [], 0
    for index in range(count):
        while index >= ends[wave]:
            wave += 1
        assigned.append(wave)
    return assigned


def selection(selector: RolloutSelector) -> Any:
    """The ids of the live instances ``selector`` matches, in wave order."""
    query = select(Instance.id).where(Instance.desired_state != DesiredState.DELETED.value)
    if selector.tenant_ids is not None:
        query = query.where(Instance.tenant_id.in_(selector.tenant_ids))
    if selector.chroma_versions is not None:
        query = query.where(Instance.spec["chroma_version"].astext.in_(selector.chroma_versions))
    if selector.labels:
        query = query.where(Instance.labels.contains(selector.labels))
    return query.order_by(func.md5(cast(Instance.id, Text)), Instance.id)


def rollout_event(session: AsyncSession, kind: str, rollout: Rollout, **after: Any) -> None:
    """A ``rollout.*`` event: no tenant, so only admins' streams carry it."""
    record_event(
        session,
        type=f"rollout.{kind}",
        instance_id=None,
        tenant_id=None,
        after={"rollout_id": str(rollout.id), "kind": rollout.kind, **after},
    )


class RolloutService:
    def __init__(
        self, session: AsyncSession, principal: Principal, versions: list[str] | None = None
    ) -> None:
        principal.require_admin()
        self.session = session
        self.versions = versions
        """The Chroma versions the runtime can run (None: it cannot tell)."""

    async def create(self, kind: RolloutKind, plan: RolloutPlan) -> Rollout:
        """A rollout with its members, each in its wave, and its ``rollout.created``."""
        if isinstance(plan, UpgradeRolloutCreate):
            self._check_version(plan.chroma_version)
        ids = list(await self.session.scalars(selection(plan.selector)))
        rollout = Rollout(
            id=uuid.uuid4(),
            kind=kind.value,
            state=RolloutState.PENDING.value,
            request=plan.model_dump(mode="json"),
            current_wave=0,
        )
        self.session.add(rollout)
        await self.session.flush()
        waves = assign_waves(len(ids), plan.waves)
        if ids:
            await self.session.execute(
                insert(RolloutMember),
                [
                    {"rollout_id": rollout.id, "instance_id": i, "wave": w, "state": "waiting"}
                    for i, w in zip(ids, waves, strict=True)
                ],
            )
        sizes = Counter(waves)
        per_wave = [sizes.get(k, 0) for k in range(len(plan.waves))]
        rollout_event(self.session, "created", rollout, state=rollout.state, waves=per_wave)
        return rollout

    def _check_version(self, version: str) -> None:
        if self.versions is not None and version not in self.versions:
            raise ValidationFailedError(
                f"Chroma version {version!r} is not available "
                f"(available: {', '.join(self.versions) or 'none'})"
            )

    async def get(self, rollout_id: uuid.UUID, *, for_update: bool = False) -> Rollout:
        query = select(Rollout).where(Rollout.id == rollout_id)
        if for_update:
            query = query.with_for_update()
        rollout = await self.session.scalar(query)
        if rollout is None:
            raise NotFoundError(f"rollout {rollout_id} not found")
        return rollout

    async def recent(self, state: RolloutState | None, limit: int) -> list[Rollout]:
        query = select(Rollout)
        if state is not None:
            query = query.where(Rollout.state == state.value)
        query = query.order_by(Rollout.created_at.desc(), Rollout.id).limit(limit)
        return list(await self.session.scalars(query))

    async def transition(self, rollout_id: uuid.UUID, action: str) -> Rollout:
        """Pause, resume or cancel; ``InvalidTransitionError`` (409) when its state
        forbids. A cancel skips the members not started yet; the ones under way
        finish their own restart or upgrade."""
        rollout = await self.get(rollout_id, for_update=True)
        allowed, target = _TRANSITIONS[action]
        if rollout.state not in allowed:
            raise InvalidTransitionError(f"cannot {action} a rollout that is {rollout.state}")
        before = rollout.state
        rollout.state = target.value
        if target is RolloutState.RUNNING:
            rollout.next_step_at = datetime.now(UTC)
        if target is RolloutState.CANCELLED:
            rollout.completed_at = datetime.now(UTC)
            rollout.message = "cancelled by an admin"
            await skip_waiting(self.session, rollout.id, "the rollout was cancelled")
        rollout_event(self.session, "state_changed", rollout, before=before, state=target.value)
        await self.session.flush()
        return rollout

    async def read(self, rollout: Rollout) -> RolloutRead:
        return (await self.read_many([rollout]))[0]

    async def read_many(self, rollouts: list[Rollout]) -> list[RolloutRead]:
        counts = await wave_counts(self.session, [r.id for r in rollouts])
        return [to_read(r, counts.get(r.id, {})) for r in rollouts]

    async def members(self, rollout_id: uuid.UUID) -> list[RolloutMemberRead]:
        await self.get(rollout_id)
        rows = await self.session.scalars(
            select(RolloutMember)
            .where(RolloutMember.rollout_id == rollout_id)
            .order_by(RolloutMember.wave, RolloutMember.instance_id)
        )
        return [RolloutMemberRead.model_validate(row, from_attributes=True) for row in rows]


async def skip_waiting(session: AsyncSession, rollout_id: uuid.UUID, message: str) -> None:
    waiting = await session.scalars(
        select(RolloutMember).where(
            RolloutMember.rollout_id == rollout_id,
            RolloutMember.state == MemberState.WAITING.value,
        )
    )
    now = datetime.now(UTC)
    for member in waiting:
        member.state, member.message, member.completed_at = "skipped", message, now


async def wave_counts(
    session: AsyncSession, rollout_ids: list[uuid.UUID]
) -> dict[uuid.UUID, dict[int, Counter[str]]]:
    """Members by rollout, wave and state."""
    found: dict[uuid.UUID, dict[int, Counter[str]]] = {}
    if not rollout_ids:
        return found
    rows = await session.execute(
        select(RolloutMember.rollout_id, RolloutMember.wave, RolloutMember.state, func.count())
        .where(RolloutMember.rollout_id.in_(rollout_ids))
        .group_by(RolloutMember.rollout_id, RolloutMember.wave, RolloutMember.state)
    )
    for rollout_id, wave, state, count in rows:
        found.setdefault(rollout_id, {}).setdefault(wave, Counter())[state] = count
    return found


def to_read(rollout: Rollout, counts: dict[int, Counter[str]]) -> RolloutRead:
    percents: list[int] = rollout.request.get("waves", [100])
    waves = [
        WaveRead(
            wave=k,
            percent=percent,
            members=sum(counts.get(k, Counter()).values()),
            counts={state.value: counts.get(k, Counter())[state.value] for state in MemberState},
        )
        for k, percent in enumerate(percents)
    ]
    return RolloutRead(
        id=rollout.id,
        kind=RolloutKind(rollout.kind),
        state=RolloutState(rollout.state),
        request=rollout.request,
        current_wave=rollout.current_wave,
        next_step_at=rollout.next_step_at if rollout.state in ACTIVE_ROLLOUT else None,
        message=rollout.message,
        created_at=rollout.created_at,
        updated_at=rollout.updated_at,
        completed_at=rollout.completed_at,
        members=sum(w.members for w in waves),
        waves=waves,
    )
