"""The reconciler's work queue: claiming due instances under a lease, renewing and
releasing leases (noting a failed pass's error). (Its status writes are ``db/instance_writes.py``.)

An instance is the unit of work (keyed like a Kubernetes work queue). A claim
sets ``lease_owner``/``lease_expires_at`` with ``FOR UPDATE SKIP LOCKED``, so
replicas never work on one instance at once; every later write by the
reconciler is fenced on ``lease_owner``. A lease is free when it expired or
when no connection of its owner remains (the owner's ``application_name``),
so a replica that died is taken over at once, not after the lease runs out.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    Boolean,
    DateTime,
    Integer,
    Select,
    String,
    any_,
    bindparam,
    case,
    column,
    func,
    or_,
    select,
    table,
    union_all,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY, INTERVAL, UUID
from sqlalchemy.ext.asyncio import AsyncSession

from chroma_orch.db.driver import driver
from chroma_orch.db.locks import LockKey, try_lock
from chroma_orch.db.models import OPEN_INTENT, Instance, Intent, IntentStatus, table_of
from chroma_orch.db.rows import instance_of
from chroma_orch.db.statements import compiled as _compiled
from chroma_orch.db.statements import one_of
from chroma_orch.domain.states import Phase

_I = table_of(Instance)
_N = table_of(Intent)
_ID = bindparam("id", type_=_I.c.id.type)
_IDS = bindparam("ids", type_=ARRAY(UUID(as_uuid=True)))
_OWNER = bindparam("owner", type_=String)

_PG_STAT_ACTIVITY = table("pg_stat_activity", column("application_name", String))
_LEASE_FREE = or_(
    _I.c.lease_owner.is_(None),
    _I.c.lease_expires_at < func.now(),
    _I.c.lease_owner.not_in(
        select(_PG_STAT_ACTIVITY.c.application_name).where(
            _PG_STAT_ACTIVITY.c.application_name != ""
        )
    ),
)
"""No replica works on the instance: its lease expired, or no connection of its
owner (the owner's ``application_name``) remains."""
_OPEN = one_of(_N.c.status, [status.value for status in OPEN_INTENT])


def _claim() -> Select[Any]:
    # 1. due instances, or abandoned mid-work by an owner whose lease lapsed or
    #    who is gone; SKIP LOCKED: replicas claiming at once take different rows.
    #    The due and the leased are found apart, each by a plain index scan
    #    (ix_instances_due, ix_instances_leased), which marks the entries of dead row
    #    versions it meets so that later claims skip them: every claim and release
    #    leaves one in each index until a vacuum. One OR of the two was read by a
    #    bitmap scan, which never marks them: at 10,000 instances it read ~270 pages
    #    on every claim to find the few live rows (tests/reconciler/test_claim_plan.py).
    due_now = _I.c.next_reconcile_at <= func.now()
    leased = _I.c.lease_owner.is_not(None)
    candidates = union_all(select(_I.c.id).where(due_now), select(_I.c.id).where(leased))
    due = (
        select(_I.c.id)
        .where(_I.c.id.in_(candidates))
        # said again on the locked rows: a row another replica claimed and released
        # after this statement's snapshot is re-checked on its newest version (Read
        # Committed's recheck of a locked row sees this WHERE, not the subquery's;
        # tests/reconciler/test_claim_race.py). As "(…) IS true" no index can serve
        # it, so the planner keeps the two index scans above rather than the bitmap
        # scan of the OR they replace.
        .where(or_(due_now, leased).is_(True))
        .where(_LEASE_FREE)
        .order_by(_I.c.next_reconcile_at.asc().nulls_first())
        .limit(bindparam("batch", type_=Integer))
        .with_for_update(skip_locked=True)
        .cte("due")
    )
    # 2. leased to :owner; nothing is due while the lease holds (a request made
    #    meanwhile sets next_reconcile_at again)
    claimed = (
        update(_I)
        .where(_I.c.id.in_(select(due.c.id)))
        .values(
            lease_owner=_OWNER,
            lease_expires_at=func.now() + bindparam("lease", type_=INTERVAL),
            next_reconcile_at=None,
            updated_at=func.now(),
        )
        .returning(*_I.c)
        .cte("claimed")
    )
    # 3. their open intents are in progress now, one attempt more
    started = (
        update(_N)
        .where(_N.c.instance_id.in_(select(claimed.c.id)), _OPEN)
        .values(
            status=IntentStatus.IN_PROGRESS.value,
            attempts=_N.c.attempts + 1,
            updated_at=func.now(),
        )
        .cte("started")
    )
    return select(claimed).add_cte(started)


_CLAIM = _compiled("claim", _claim())


async def claim_due(
    session: AsyncSession, owner: str, lease: timedelta, limit: int
) -> list[Instance]:
    """Lease up to ``limit`` instances that are due and mark their open intents in
    progress, in one statement."""
    con = await driver(session, begin=False)  # one statement: a transaction of its own
    claimed = await _CLAIM.fetch(con, owner=owner, lease=lease, batch=limit)
    return [instance_of(row) for row in claimed]


_NEXT_DUE = _compiled(
    "next_due",
    # not the instances :owner works on: their passes wake its loop when they end
    select(func.min(_I.c.next_reconcile_at)).where(
        or_(_I.c.lease_owner.is_(None), _I.c.lease_owner != _OWNER)
    ),
)


async def next_due(session: AsyncSession, owner: str) -> datetime | None:
    """When the next instance falls due that no pass of ``owner``'s holds (None: none
    is scheduled). The work loop asks after every wake, on every replica: compiled,
    one statement of its own."""
    con = await driver(session, begin=False)
    due: datetime | None = await _NEXT_DUE.fetchval(con, owner=owner)
    return due


_RENEW = _compiled(
    "renew_leases",
    update(_I)
    .where(_I.c.id == any_(_IDS), _I.c.lease_owner == _OWNER)
    .values(lease_expires_at=func.now() + bindparam("lease", type_=INTERVAL)),
)


async def renew_leases(
    session: AsyncSession, owner: str, ids: Sequence[uuid.UUID], lease: timedelta
) -> None:
    if ids:
        con = await driver(session, begin=False)  # one statement: a unit of its own
        await _RENEW.execute(con, ids=list(ids), owner=owner, lease=lease)


_ERROR = bindparam("error", type_=String)
_CLEAR = bindparam("clear_errors", type_=Boolean)


def _release() -> Select[Any]:
    released = (
        update(_I)
        .where(_I.c.id == _ID, _I.c.lease_owner == _OWNER)
        .values(
            lease_owner=None,
            lease_expires_at=None,
            next_reconcile_at=func.least(
                _I.c.next_reconcile_at, bindparam("requeue_at", type_=DateTime(timezone=True))
            ),
            # a failed pass counts for the backoff; a good one starts it over
            error_count=case(
                (_ERROR.is_not(None), _I.c.error_count + 1),
                (_CLEAR, 0),
                else_=_I.c.error_count,
            ),
            updated_at=func.now(),
        )
        .returning(_I.c.id)
        .cte("released")
    )
    noted = (  # the failed pass's error, on the open intents (even if the lease was lost)
        update(_N)
        .where(_N.c.instance_id == _ID, _OPEN, _ERROR.is_not(None))
        .values(error=_ERROR, updated_at=func.now())
        .cte("noted")
    )
    return select(released.c.id).add_cte(noted)


_RELEASE = _compiled("release_lease", _release())


async def release(
    session: AsyncSession,
    instance_id: uuid.UUID,
    owner: str,
    requeue_at: datetime | None,
    *,
    error: str | None = None,
    clear_errors: bool = False,
) -> None:
    """Give the lease back; keep an earlier ``next_reconcile_at`` set meanwhile by the
    API. ``error``: the pass failed, counted on the instance (for its backoff) and
    noted on its open intents; ``clear_errors``: it went well, the backoff starts
    over. One statement, a unit of its own unless the session began a transaction."""
    con = await driver(session, begin=False)
    await _RELEASE.fetch(
        con,
        id=instance_id,
        owner=owner,
        requeue_at=requeue_at,
        error=error,
        clear_errors=clear_errors,
    )


OBSERVED_PHASES = (Phase.STARTING, Phase.RUNNING, Phase.STOPPING)

_LIVE = (
    one_of(_I.c.phase, [phase.value for phase in OBSERVED_PHASES]),
    _I.c.handle.is_not(None),
    _I.c.next_reconcile_at.is_(None),
    _LEASE_FREE,
)
"""Instances with a server that nobody is working on (nor is due to be)."""

_LIVE_TO_OBSERVE = _compiled(
    "live_to_observe",
    select(_I.c.id, _I.c.phase, _I.c.phase_changed_at, _I.c.handle, _I.c.start_phases)
    .where(*_LIVE, _I.c.id > bindparam("after", type_=_I.c.id.type))
    .order_by(_I.c.id)
    .limit(bindparam("limit", type_=Integer)),
)
_MARK_EXITED_DUE = _compiled(
    "mark_exited_due",
    update(_I)
    .where(*_LIVE, _I.c.id == any_(_IDS))
    .values(next_reconcile_at=func.now(), updated_at=func.now())
    .returning(_I.c.id),
)


@dataclass(frozen=True, slots=True)
class LiveServer:
    """What the liveness pass reads of an instance whose server it polls: only the
    columns it decides on. (Whole rows as ORM objects cost 60 µs each: at 10,000
    instances a pass spent ~0.3 s of the event loop building them.)"""

    id: uuid.UUID
    phase: Phase
    phase_changed_at: datetime
    handle: dict[str, Any]
    start_phases: dict[str, Any] | None


FIRST_ID = uuid.UUID(int=0)
"""Below every instance id: where a round of liveness passes begins."""


async def live_to_observe(
    session: AsyncSession, limit: int, after: uuid.UUID = FIRST_ID
) -> list[LiveServer]:
    """Instances with a server that nobody is working on: the liveness pass's input,
    ``limit`` at most, by id after ``after``. A fleet larger than ``limit`` is covered
    in a round of passes, each starting after the last id of the one before; without
    the order and the cursor the same ``limit`` rows came back every pass, and the
    servers of the rest of the fleet were never polled."""
    found = await _LIVE_TO_OBSERVE.fetch(await driver(session), limit=limit, after=after)
    return [
        LiveServer(
            id=row["id"],
            phase=Phase(row["phase"]),
            phase_changed_at=row["phase_changed_at"],
            handle=row["handle"],
            start_phases=row["start_phases"],
        )
        for row in found
    ]


async def mark_exited_due(session: AsyncSession, ids: Collection[uuid.UUID]) -> list[uuid.UUID]:
    """Mark due those of ``ids`` (servers the runtime said exited) that are live and
    nobody works on; their own pass observes the exit. One in a pass is left to that
    pass (a mark now would be overwritten as the pass releases it); one already due
    is due."""
    rows = await _MARK_EXITED_DUE.fetch(await driver(session), ids=list(ids))
    return [row["id"] for row in rows]


async def try_observer_lock(session: AsyncSession) -> bool:
    """One replica at a time runs a liveness pass (held until the transaction ends)."""
    return await try_lock(session, LockKey.OBSERVER)
