"""The reconciler's SQL: claiming due instances under a lease, renewing and
releasing leases, and settling intents. All of it lives here.

An instance is the unit of work (keyed like a Kubernetes work queue). A claim
sets ``lease_owner``/``lease_expires_at`` with ``FOR UPDATE SKIP LOCKED``, so
replicas never work on one instance at once; every later write by the
reconciler is fenced on ``lease_owner``. A lease is free when it expired or
when no connection of its owner remains (the owner's ``application_name``),
so a replica that died is taken over at once, not after the lease runs out.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from sqlalchemy import case, func, or_, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from chroma_orch.db.models import Instance, Intent
from chroma_orch.domain.states import Phase

OPEN_INTENT = ("pending", "in_progress")
_OBSERVER_LOCK_KEY = 0x63686F6F62737276  # "chroobsrv"

_owner_gone = text(
    "instances.lease_owner NOT IN "
    "(SELECT application_name FROM pg_stat_activity WHERE application_name <> '')"
)


def _lease_free() -> object:
    return or_(
        Instance.lease_owner.is_(None),
        Instance.lease_expires_at < func.now(),
        _owner_gone,
    )


async def claim_due(
    session: AsyncSession, owner: str, lease: timedelta, limit: int
) -> list[Instance]:
    """Lease up to ``limit`` instances that are due; mark their open intents in progress."""
    due = (
        select(Instance.id)
        .where(
            # due, or abandoned mid-work by an owner whose lease lapsed or who is gone
            or_(Instance.next_reconcile_at <= func.now(), Instance.lease_owner.is_not(None)),
            _lease_free(),  # type: ignore[arg-type]
        )
        .order_by(Instance.next_reconcile_at.nulls_first())
        .limit(limit)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    expires = func.now() + lease
    claimed = list(
        await session.scalars(
            update(Instance)
            .where(Instance.id.in_(due))
            .values(lease_owner=owner, lease_expires_at=expires, next_reconcile_at=None)
            .returning(Instance),
            execution_options={"synchronize_session": False},
        )
    )
    if claimed:
        await session.execute(
            update(Intent)
            .where(Intent.instance_id.in_([i.id for i in claimed]), Intent.status.in_(OPEN_INTENT))
            .values(
                status="in_progress",
                attempts=Intent.attempts + 1,
                lease_owner=owner,
                lease_expires_at=expires,
            )
        )
    return claimed


async def renew_leases(
    session: AsyncSession, owner: str, ids: Sequence[uuid.UUID], lease: timedelta
) -> None:
    if ids:
        await session.execute(
            update(Instance)
            .where(Instance.id.in_(ids), Instance.lease_owner == owner)
            .values(lease_expires_at=func.now() + lease)
        )


async def release(
    session: AsyncSession, instance_id: uuid.UUID, owner: str, requeue_at: datetime | None
) -> None:
    """Give the lease back; keep an earlier ``next_reconcile_at`` set meanwhile by the API."""
    await session.execute(
        update(Instance)
        .where(Instance.id == instance_id, Instance.lease_owner == owner)
        .values(
            lease_owner=None,
            lease_expires_at=None,
            next_reconcile_at=func.least(Instance.next_reconcile_at, requeue_at),
        )
    )


async def fenced_update(
    session: AsyncSession, instance_id: uuid.UUID, owner: str, values: dict[str, object]
) -> bool:
    """Update columns the reconciler owns, only while it holds the lease."""
    result = await session.execute(
        update(Instance)
        .where(Instance.id == instance_id, Instance.lease_owner == owner)
        .values(**values)
        .returning(Instance.id)
    )
    return result.first() is not None


async def settle_intents(
    session: AsyncSession, instance_id: uuid.UUID, generation: int, error: str | None
) -> None:
    """Close open intents up to ``generation``: the latest succeeded (or failed with
    ``error``), older ones superseded by it."""
    latest = Intent.target_generation == generation
    await session.execute(
        update(Intent)
        .where(
            Intent.instance_id == instance_id,
            Intent.status.in_(OPEN_INTENT),
            Intent.target_generation <= generation,
        )
        .values(
            status=case((latest, "failed" if error else "succeeded"), else_="superseded"),
            error=case((latest, error), else_=Intent.error),
            completed_at=datetime.now(UTC),
            lease_owner=None,
            lease_expires_at=None,
        )
    )


OBSERVED_PHASES = (Phase.STARTING, Phase.RUNNING, Phase.STOPPING)


async def live_to_observe(session: AsyncSession, limit: int) -> list[Instance]:
    """Instances with a server that nobody is working on: the liveness pass's input."""
    return list(
        await session.scalars(
            select(Instance)
            .where(
                Instance.phase.in_(OBSERVED_PHASES),
                Instance.handle.is_not(None),
                Instance.next_reconcile_at.is_(None),
                _lease_free(),  # type: ignore[arg-type]
            )
            .limit(limit)
        )
    )


async def try_observer_lock(session: AsyncSession) -> bool:
    """One replica at a time runs a liveness pass (held until the transaction ends)."""
    got = await session.scalar(select(func.pg_try_advisory_xact_lock(_OBSERVER_LOCK_KEY)))
    return bool(got)


async def mark_due(session: AsyncSession, ids: Sequence[uuid.UUID]) -> None:
    if ids:
        await session.execute(
            update(Instance)
            .where(Instance.id.in_(ids))
            .values(next_reconcile_at=func.least(Instance.next_reconcile_at, func.now()))
        )
