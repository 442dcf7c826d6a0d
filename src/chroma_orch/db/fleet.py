"""The fleet's numbers, read from the instances and the event log (GET /v1/fleet, /metrics).

Each read is one statement whose cost is bounded by what it returns, not by the
size of the log: the event reads go through the partial indexes of migration 0019
(``ix_events_running``, ``ix_events_failures``, ``ix_events_lifecycle``). The
counts scan the instances table (one row per instance: ~2 ms at 10,000).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import CTE, ColumnElement, Select, String, and_, func, literal, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from chroma_orch.db.models import OPEN_INTENT, Event, Instance, Intent, Tenant, table_of

RUNNING = "running"
FAILURE_EVENTS = ("instance.failed", "instance.crashed")
LIFECYCLE_EVENTS = ("instance.created", "instance.desired_changed", "instance.phase_changed")
_E = table_of(Event)
_SETTLED = ("running", "stopped", "failed")
"""Phases after which the next start-ish event begins a new start."""


def _const(value: str) -> ColumnElement[str]:
    """``value`` written into the SQL, not sent as a parameter: the partial indexes'
    predicates match only constants the planner can see (also in a generic plan)."""
    return literal(value, literal_execute=True)


def _consts(values: tuple[str, ...]) -> list[ColumnElement[str]]:
    return [_const(value) for value in values]


def _field(doc: ColumnElement[Any], key: str) -> ColumnElement[str]:
    """``doc ->> 'key'``, the key written into the SQL (as the indexes have it)."""
    return doc.op("->>", return_type=String)(_const(key))


@dataclass(frozen=True)
class StartTimes:
    """The histogram of the latest starts' seconds: ``buckets[i]`` counts the starts
    in ``[i * upper / len(buckets), (i + 1) * upper / len(buckets))`` (the last one
    includes ``upper``, the slowest)."""

    count: int
    upper: float
    p50: float | None
    p90: float | None
    buckets: list[int]


@dataclass(frozen=True)
class Failure:
    seq: int
    event: str
    instance_id: uuid.UUID | None
    instance_name: str | None
    tenant_id: uuid.UUID | None
    tenant_name: str | None
    reason: str | None
    message: str | None
    at: datetime


def counts_statement() -> Select[str, str, int]:
    return (
        select(Instance.phase, Instance.runtime, func.count())
        .where(Instance.phase != "deleted")
        .group_by(Instance.phase, Instance.runtime)
    )


async def instance_counts(session: AsyncSession) -> list[tuple[str, str, int]]:
    """(phase, runtime, count) of the instances not deleted."""
    rows = await session.execute(counts_statement())
    return [(phase, runtime, count) for phase, runtime, count in rows]


async def intents_waiting(session: AsyncSession) -> int:
    waiting = await session.scalar(
        select(func.count()).select_from(Intent).where(Intent.status.in_(OPEN_INTENT))
    )
    return waiting or 0


def _start_seconds(since: datetime, sample: int) -> CTE:
    """The seconds each of the latest ``sample`` starts since ``since`` took: from the
    event that began it to its ``phase_changed`` to running. A start begins at the
    first request or start attempt (``instance.created``, ``instance.desired_changed``
    to running, ``phase_changed`` to starting) after the instance was last running,
    stopped or failed; so a start's time includes its wait in the queue and its
    retries after crashes."""
    e = _E.c
    r = (
        select(e.seq, e.instance_id, e.created_at)
        .where(
            e.type == _const("instance.phase_changed"),
            _field(e.after, "phase") == _const(RUNNING),
            e.created_at >= since,
        )
        .order_by(e.created_at.desc())
        .limit(sample)
        .subquery("r")
    )
    prior = _E.alias("prior")
    p = prior.c
    settled = (
        select(func.max(p.seq))
        .where(
            p.instance_id == r.c.instance_id,
            p.seq < r.c.seq,
            p.type == _const("instance.phase_changed"),
            _field(p.after, "phase").in_(_consts(_SETTLED)),
        )
        .correlate(r)
        .scalar_subquery()
    )
    began = _E.alias("began")
    b = began.c
    begin = (
        select(b.created_at.label("at"))
        .where(
            b.instance_id == r.c.instance_id,
            b.seq > func.coalesce(settled, 0),
            b.seq < r.c.seq,
            b.type.in_(_consts(LIFECYCLE_EVENTS)),
            or_(
                b.type == _const("instance.created"),
                and_(
                    b.type == _const("instance.desired_changed"),
                    _field(b.after, "desired_state") == _const(RUNNING),
                ),
                and_(
                    b.type == _const("instance.phase_changed"),
                    _field(b.after, "phase") == _const("starting"),
                ),
            ),
        )
        .order_by(b.seq)
        .limit(1)
        .lateral("begin")
    )
    seconds = func.extract("epoch", r.c.created_at - begin.c.at)
    return select(seconds.label("s")).select_from(r.join(begin, literal(True))).cte("d")


def start_times_statement(since: datetime, sample: int, buckets: int) -> Select[Any]:
    """Rows of (bucket 1..``buckets``, count, upper, n, p50, p90) for ``start_times``."""
    d = _start_seconds(since, sample)
    bounds = select(
        func.greatest(func.max(d.c.s), 0.001).label("upper"),
        func.count().label("n"),
        func.percentile_cont(0.5).within_group(d.c.s).label("p50"),
        func.percentile_cont(0.9).within_group(d.c.s).label("p90"),
    ).cte("bounds")
    bucket = func.least(func.width_bucket(d.c.s, 0, bounds.c.upper, buckets), buckets)
    return (
        select(bucket.label("b"), func.count(), *bounds.c)
        .select_from(d.join(bounds, literal(True)))
        .group_by(bucket, *bounds.c)
    )


async def start_times(
    session: AsyncSession, *, since: datetime, sample: int, buckets: int
) -> StartTimes:
    """The histogram of the latest ``sample`` starts since ``since``, in ``buckets``
    equal buckets from 0 to the slowest (PostgreSQL's ``width_bucket``)."""
    rows = (await session.execute(start_times_statement(since, sample, buckets))).all()
    counts = [0] * buckets
    for row in rows:
        counts[max(int(row[0]), 1) - 1] += int(row[1])
    if not rows:
        return StartTimes(count=0, upper=0.0, p50=None, p90=None, buckets=counts)
    first = rows[0]
    return StartTimes(
        count=int(first[3]),
        upper=float(first[2]),
        p50=float(first[4]),
        p90=float(first[5]),
        buckets=counts,
    )


def failures_statement(since: datetime, limit: int) -> Select[Any]:
    e = _E.c
    return (
        select(
            e.seq,
            e.type,
            e.instance_id,
            Instance.name,
            e.tenant_id,
            Tenant.name,
            _field(e.after, "reason"),
            _field(e.after, "message"),
            e.created_at,
        )
        .select_from(
            _E.outerjoin(Instance, Instance.id == e.instance_id).outerjoin(
                Tenant, Tenant.id == e.tenant_id
            )
        )
        .where(e.type.in_(_consts(FAILURE_EVENTS)), e.created_at >= since)
        .order_by(e.created_at.desc(), e.seq.desc())
        .limit(limit)
    )


async def recent_failures(session: AsyncSession, *, since: datetime, limit: int) -> list[Failure]:
    """The latest ``limit`` failures (``instance.failed``, ``instance.crashed``) since
    ``since``, newest first, with the names of their instance and tenant."""
    rows = await session.execute(failures_statement(since, limit))
    return [Failure(*row) for row in rows]
