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
from datetime import datetime, timedelta
from typing import Any

import asyncpg
from sqlalchemy.ext.asyncio import AsyncSession

from chroma_orch.db.driver import driver
from chroma_orch.db.locks import LockKey, try_lock
from chroma_orch.db.models import OPEN_INTENT_SQL, Instance, IntentStatus
from chroma_orch.db.outbox import append_events_sql, append_selected_events_sql, defer_events
from chroma_orch.db.rows import (
    INSTANCE_COLUMNS_SQL,
    instance_columns_sql,
    instance_of,
    update_instance_sql,
)
from chroma_orch.domain.states import Phase
from chroma_orch.reconciler.ports import PortPool, recently_released_sql
from chroma_orch.reconciler.views import status_view_sql

_LEASE_FREE_SQL = (
    "(lease_owner IS NULL OR lease_expires_at < now() OR lease_owner NOT IN "
    "(SELECT application_name FROM pg_stat_activity WHERE application_name <> ''))"
)

_DUE = f"""due AS (
    SELECT {INSTANCE_COLUMNS_SQL} FROM instances
    -- due, or abandoned mid-work by an owner whose lease lapsed or who is gone
    WHERE (next_reconcile_at <= now() OR lease_owner IS NOT NULL) AND {_LEASE_FREE_SQL}
    ORDER BY next_reconcile_at NULLS FIRST
    LIMIT $3
    FOR UPDATE SKIP LOCKED
)"""
_LEASED = "lease_owner = $1, lease_expires_at = now() + $2::interval, next_reconcile_at = NULL"
_INTENTS_STARTED = f"""started AS (
    UPDATE intents
    SET status = '{IntentStatus.IN_PROGRESS.value}', attempts = attempts + 1, updated_at = now()
    WHERE instance_id IN (SELECT id FROM claimed) AND status IN ({OPEN_INTENT_SQL})
)"""
_CLAIM_ONLY = f"""WITH {_DUE}, claimed AS (
    UPDATE instances SET {_LEASED}, updated_at = now()
    WHERE id IN (SELECT id FROM due)
    RETURNING {INSTANCE_COLUMNS_SQL}
), {_INTENTS_STARTED}
SELECT *, NULL::int AS reserved_port FROM claimed"""

_STARTS_SQL = """desired_state = 'running' AND handle IS NULL
        AND (phase IN ('pending', 'stopped')
            OR (phase = 'failed' AND observed_generation < generation))"""
"""Instances a pass will start (see ``InstanceReconciler._run``)."""

_RESERVING_CTES = f"""starting AS (
    SELECT id, row_number() OVER (ORDER BY id) AS n FROM due
    WHERE {_STARTS_SQL}
        AND NOT EXISTS (SELECT 1 FROM allocated_ports a WHERE a.instance_id = due.id)
), free AS (
    -- random free ports, none that a server left within the quarantine
    SELECT port, row_number() OVER (ORDER BY random()) AS n
    FROM generate_series($4::int, $5::int) AS port
    WHERE EXISTS (SELECT 1 FROM starting) AND port NOT IN (SELECT port FROM allocated_ports)
        AND port NOT IN ({recently_released_sql(6, 7)})
), reserved AS (
    INSERT INTO allocated_ports (port, instance_id)
    SELECT free.port, starting.id FROM starting JOIN free USING (n)
    ON CONFLICT DO NOTHING
    RETURNING port, instance_id
), claimed AS (
    -- an instance with a reserved port is starting, from this very statement on
    UPDATE instances i
    SET {_LEASED}, updated_at = now(),
        phase = CASE WHEN r.port IS NULL THEN i.phase ELSE 'starting' END,
        phase_changed_at = CASE WHEN r.port IS NULL THEN i.phase_changed_at ELSE now() END,
        endpoint_host = CASE WHEN r.port IS NULL THEN i.endpoint_host END,
        endpoint_port = CASE WHEN r.port IS NULL THEN i.endpoint_port END
    FROM due LEFT JOIN reserved r ON r.instance_id = due.id
    WHERE i.id = due.id
    RETURNING {instance_columns_sql("i")}, r.port AS reserved_port
), {_INTENTS_STARTED}"""
_STARTING_EVENTS = f"""SELECT 'instance.phase_changed', due.id, due.tenant_id,
        {status_view_sql("due")},
        {status_view_sql("due", phase="'starting'", endpoint=False)}
    FROM locked, due JOIN reserved ON reserved.instance_id = due.id
    ORDER BY due.id"""


def _claim_reserving() -> tuple[str, list[Any]]:
    """The claim that also reserves a port for each instance it hands out to be
    started, and records those as "starting" (with their events) right away."""
    gate = "(SELECT FROM reserved LIMIT 1) AS gate"  # the lock once, if any starts
    ctes, items, params = append_selected_events_sql(_STARTING_EVENTS, first=8, gate=gate)
    sql = f"WITH {_DUE}, {_RESERVING_CTES}, {', '.join(ctes)} SELECT *, {items} FROM claimed"
    return sql, params


_CLAIM_RESERVING, _CLAIM_RESERVING_PARAMS = _claim_reserving()


async def claim_due(
    session: AsyncSession,
    owner: str,
    lease: timedelta,
    limit: int,
    ports: PortPool | None = None,
) -> list[tuple[Instance, int | None]]:
    """Lease up to ``limit`` instances that are due and mark their open intents in
    progress, in one statement. With ``ports``, the same statement
    reserves a free port of that pool for each claimed instance about to start
    that holds none, records it as "starting" (with its event), and answers the
    port with the instance (else None): its server can be spawned at once, with
    nothing more to write until it is up."""
    con = await driver(session, begin=False)  # one statement: a transaction of its own
    if ports is None:
        claimed = await con.fetch(_CLAIM_ONLY, owner, lease, limit)
    else:
        params = [ports.low, ports.high, ports.host, ports.quarantine]
        params += _CLAIM_RESERVING_PARAMS
        claimed = await con.fetch(_CLAIM_RESERVING, owner, lease, limit, *params)
    return [(instance_of(row), row["reserved_port"]) for row in claimed]


async def renew_leases(
    session: AsyncSession, owner: str, ids: Sequence[uuid.UUID], lease: timedelta
) -> None:
    if ids:
        await (await driver(session)).execute(
            "UPDATE instances SET lease_expires_at = now() + $3::interval "
            "WHERE id = ANY($1) AND lease_owner = $2",
            list(ids),
            owner,
            lease,
        )


async def release(
    session: AsyncSession, instance_id: uuid.UUID, owner: str, requeue_at: datetime | None
) -> None:
    """Give the lease back; keep an earlier ``next_reconcile_at`` set meanwhile by the API."""
    await (await driver(session)).execute(
        "UPDATE instances SET lease_owner = NULL, lease_expires_at = NULL, "
        "next_reconcile_at = least(next_reconcile_at, $3), updated_at = now() "
        "WHERE id = $1 AND lease_owner = $2",
        instance_id,
        owner,
        requeue_at,
    )


async def record_error(
    session: AsyncSession, instance_id: uuid.UUID, owner: str, error: str
) -> None:
    """Count a failed pass on the instance (for its backoff) and note it on open intents."""
    con = await driver(session)
    await con.execute(
        "UPDATE instances SET error_count = error_count + 1, updated_at = now() "
        "WHERE id = $1 AND lease_owner = $2",
        instance_id,
        owner,
    )
    await con.execute(
        f"UPDATE intents SET error = $2, updated_at = now() "
        f"WHERE instance_id = $1 AND status IN ({OPEN_INTENT_SQL})",
        instance_id,
        error,
    )


async def fenced_update(
    session: AsyncSession,
    instance_id: uuid.UUID,
    owner: str,
    values: dict[str, object],
    *,
    settle: tuple[int, str | None] | None = None,
    events: Sequence[dict[str, Any]] = (),
    reserve_port: tuple[int, PortPool] | None = None,
    free_port: bool = False,
    alone: bool = False,
) -> asyncpg.Record | None:
    """Update columns the reconciler owns, only while it holds the lease (None when
    it does not). All in one statement, and only if the update happened: with
    ``settle`` (generation, error), close the open intents up to that generation
    (the latest succeeded, or failed with ``error``; older ones superseded); with
    ``events``, append them; with ``reserve_port`` (port, pool), reserve that port
    for the instance unless it holds one or the port is quarantined (answered as
    ``reserved``, or ``held``); with
    ``free_port``, give its port back. ``due`` in the answer: whether the instance
    is due (someone asked for more while it was leased). ``alone``: the statement
    is the whole unit of work, so it commits by itself (no BEGIN/COMMIT round trips)
    unless the session has begun a transaction already; inside a transaction the
    events are left to ``db.outbox.commit``."""
    update, params = update_instance_sql(values, lease_owner=owner)
    ctes = [f"updated AS ({update})"]
    items = [
        "(SELECT id FROM updated) AS written",
        "(SELECT next_reconcile_at IS NOT NULL FROM updated) AS due",
    ]
    if settle is not None:
        generation, error = settle
        first = len(params) + 2
        ctes.append(_settled(first))
        status = IntentStatus.FAILED if error else IntentStatus.SUCCEEDED
        params += [generation, status.value, error]
    if reserve_port is not None:
        port, pool = reserve_port
        params += [port, pool.host, pool.quarantine]
        first = len(params) - 1  # $1 is the instance id
        ctes += _reserved(first, first + 1, first + 2)
        items += ["(SELECT port FROM reserved) AS reserved", "(SELECT port FROM held) AS held"]
    if free_port:
        ctes.append(
            "freed AS (DELETE FROM allocated_ports WHERE instance_id IN (SELECT id FROM updated))"
        )
    con = await driver(session, begin=not alone)
    deferred = con.is_in_transaction()
    if events and not deferred:
        appending, selected, event_params = append_events_sql(
            list(events), first=len(params) + 2, gate="updated"
        )
        ctes += appending
        items.append(selected)
        params += event_params
    sql = f"WITH {', '.join(ctes)} SELECT {', '.join(items)}"
    row = await con.fetchrow(sql, instance_id, *params)
    if row["written"] is None:
        return None
    if events and deferred:
        defer_events(session, list(events), {})
    return row


def _reserved(port: int, host: int, quarantine: int) -> list[str]:
    """The CTEs reserving port ``$port`` for the instance (``$1``) unless it holds one
    or the port is quarantined on ``$host`` (``$quarantine``) for it."""
    quarantined = recently_released_sql(host, quarantine, other_than=1)
    return [
        "held AS (SELECT port FROM allocated_ports WHERE instance_id = $1)",
        f"""reserved AS (INSERT INTO allocated_ports (port, instance_id)
    SELECT ${port}, id FROM updated WHERE NOT EXISTS (SELECT 1 FROM held)
        AND ${port} NOT IN ({quarantined})
    ON CONFLICT DO NOTHING RETURNING port)""",
    ]


def _settled(g: int) -> str:
    """The CTE settling the open intents up to generation ``$g`` (status ``$g+1``,
    error ``$g+2`` for that generation's own; older ones superseded)."""
    return f"""settled AS (
    UPDATE intents
    SET status = CASE WHEN target_generation = ${g}
            THEN ${g + 1} ELSE '{IntentStatus.SUPERSEDED.value}' END,
        error = CASE WHEN target_generation = ${g} THEN ${g + 2} ELSE error END,
        completed_at = now(), updated_at = now()
    WHERE instance_id IN (SELECT id FROM updated)
        AND status IN ({OPEN_INTENT_SQL}) AND target_generation <= ${g}
)"""


OBSERVED_PHASES = (Phase.STARTING, Phase.RUNNING, Phase.STOPPING)

_LIVE_TO_OBSERVE = f"""
SELECT {INSTANCE_COLUMNS_SQL} FROM instances
WHERE phase = ANY($1) AND handle IS NOT NULL AND next_reconcile_at IS NULL AND {_LEASE_FREE_SQL}
LIMIT $2
"""


async def live_to_observe(session: AsyncSession, limit: int) -> list[Instance]:
    """Instances with a server that nobody is working on: the liveness pass's input."""
    phases = [phase.value for phase in OBSERVED_PHASES]
    found = await (await driver(session)).fetch(_LIVE_TO_OBSERVE, phases, limit)
    return [instance_of(row) for row in found]


async def try_observer_lock(session: AsyncSession) -> bool:
    """One replica at a time runs a liveness pass (held until the transaction ends)."""
    return await try_lock(session, LockKey.OBSERVER)


async def mark_due(session: AsyncSession, ids: Sequence[uuid.UUID]) -> None:
    if ids:
        await (await driver(session)).execute(
            "UPDATE instances SET next_reconcile_at = least(next_reconcile_at, now()), "
            "updated_at = now() WHERE id = ANY($1)",
            list(ids),
        )
