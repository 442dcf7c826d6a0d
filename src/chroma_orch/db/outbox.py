"""The append-only event log and the notifications that travel with a commit.

Every state change calls ``record_event``; ``commit`` writes the pending events
while holding a transaction-scoped advisory lock, so sequence numbers become
visible in commit order and a reader that has seen ``seq`` N has seen every
event below N (no gaps for ``since=`` resumes). NOTIFY is sent inside the same
transaction, so PostgreSQL delivers it only if the commit succeeds.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from chroma_orch.db.driver import driver
from chroma_orch.db.locks import LockKey

EVENTS_CHANNEL = "chroma_orch_events"
INTENTS_CHANNEL = "chroma_orch_intents"
_PENDING_EVENTS = "chroma_orch.pending_events"
_PENDING_NOTIFY = "chroma_orch.pending_notify"
_PAYLOAD_IDS_LIMIT = 7000  # NOTIFY payloads must stay under 8000 bytes


def record_event(
    session: AsyncSession,
    *,
    type: str,
    instance_id: uuid.UUID | None,
    tenant_id: uuid.UUID | None,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
) -> None:
    """Queue an event to be appended when ``session`` commits through ``commit``."""
    session.info.setdefault(_PENDING_EVENTS, []).append(
        event_row(
            type=type, instance_id=instance_id, tenant_id=tenant_id, before=before, after=after
        )
    )


def notify_on_commit(session: AsyncSession, channel: str, payload: str = "") -> None:
    """Send ``NOTIFY channel, payload`` if and when ``session`` commits."""
    session.info.setdefault(_PENDING_NOTIFY, {})[channel] = payload


def event_row(
    *,
    type: str,
    instance_id: uuid.UUID | None,
    tenant_id: uuid.UUID | None,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "type": type,
        "instance_id": instance_id,
        "tenant_id": tenant_id,
        "before": before,
        "after": after,
    }


_EVENT_COLUMNS = "type, instance_id, tenant_id, before, after"


def _appending(select: str, first: int, gate: str | None) -> tuple[list[str], list[str]]:
    """The CTEs that take the ordering lock (only if ``gate`` yields a row, when given)
    and insert the rows of ``select`` (which reads ``locked``), and the select-list
    items giving the last sequence number and notifying the events channel. The lock
    key is parameter ``$first`` and the channel ``$first + 1``."""
    source = f" FROM {gate}" if gate else ""
    ctes = [
        f"locked AS (SELECT pg_advisory_xact_lock(${first}){source})",
        f"appended AS (INSERT INTO events ({_EVENT_COLUMNS}) {select} "
        "RETURNING seq, instance_id, after->>'phase' AS phase)",
    ]
    ids = "string_agg(DISTINCT ' ' || instance_id::text || coalesce('=' || phase, ''), '')"
    # "<last seq> <instance id>[=<phase it went to>] ...", so listeners wake only
    # the waiters concerned; without ids (none, or too many to fit) everyone wakes
    payload = (
        f"max(seq)::text || coalesce(CASE WHEN length({ids}) < {_PAYLOAD_IDS_LIMIT} "
        f"THEN {ids} END, '')"
    )
    items = [
        "(SELECT max(seq) FROM appended)",
        f"(SELECT pg_notify(${first + 1}, {payload}) FROM appended HAVING count(*) > 0)",
    ]
    return ctes, items


def append_events_sql(
    events: list[dict[str, Any]],
    first: int,
    gate: str | None = None,
    notify: Mapping[str, str] | None = None,
) -> tuple[list[str], str, list[Any]]:
    """What appends ``events`` and sends ``notify`` (channel: payload) inside a
    larger statement, only if the CTE ``gate``, when given, yields a row: CTEs that
    take the ordering lock and insert the events, the select-list items (the first
    gives the last sequence number), and the parameters, numbered from ``$first``.
    The lock is held until the transaction ends, which should be soon after."""
    source = f" FROM {gate}" if gate else ""
    ctes: list[str] = []
    items = ["NULL::bigint"]
    params: list[Any] = []
    if events:
        select = (
            f"SELECT e.type, e.instance_id, e.tenant_id, e.before, e.after "
            f"FROM locked, jsonb_to_recordset(${first + 2}::text::jsonb) "
            "AS e(type text, instance_id uuid, tenant_id uuid, before jsonb, after jsonb)"
        )
        ctes, items = _appending(select, first, gate)
        params = [int(LockKey.EVENTS), EVENTS_CHANNEL, json.dumps(events, default=str)]
    for channel, payload in (notify or {}).items():
        n = first + len(params)
        items.append(f"(SELECT pg_notify(${n}, ${n + 1}){source})")
        params += [channel, payload]
    return ctes, ", ".join(items), params


def append_selected_events_sql(
    select: str, first: int, gate: str
) -> tuple[list[str], str, list[Any]]:
    """``append_events_sql`` for events that a query of the same statement yields:
    ``select`` gives rows of (type, instance_id, tenant_id, before, after) and reads
    the CTE ``locked`` (the ordering lock, taken only if the CTE ``gate`` yields a
    row). Returns the CTEs, the select-list items and their parameters."""
    ctes, items = _appending(select, first, gate)
    return ctes, ", ".join(items), [int(LockKey.EVENTS), EVENTS_CHANNEL]


def defer_events(
    session: AsyncSession, events: list[dict[str, Any]], notify: Mapping[str, str]
) -> None:
    """Leave a write's events and notifications to ``commit``: for a write inside a
    longer transaction, so the ordering lock is taken last and held only at the end
    (a statement that commits by itself folds them in with ``append_events_sql``)."""
    session.info.setdefault(_PENDING_EVENTS, []).extend(events)
    session.info.setdefault(_PENDING_NOTIFY, {}).update(notify)


async def commit(session: AsyncSession) -> int | None:
    """Write pending events and notifications, then commit. Returns the last event seq.

    Events go in with one statement that takes the lock, appends them and
    notifies (the lock and the insert must be one unit; one round trip is cheaper).
    """
    events: list[dict[str, Any]] = session.info.pop(_PENDING_EVENTS, [])
    notifications: dict[str, str] = session.info.pop(_PENDING_NOTIFY, {})
    last_seq: int | None = None
    if events or notifications:
        ctes, items, params = append_events_sql(events, first=1, notify=notifications)
        sql = (f"WITH {', '.join(ctes)} " if ctes else "") + f"SELECT {items}"
        last_seq = await (await driver(session)).fetchval(sql, *params)
    await session.commit()
    return last_seq


def parse_events_payload(payload: str) -> tuple[int | None, list[tuple[str, str]]]:
    """The last sequence number of an events notification, and its (instance id,
    phase) pairs: the phase an event of that instance recorded ("" for an event
    without one; an instance may come with several)."""
    parts = payload.split()
    if not parts or not parts[0].isdigit():
        return None, []
    changes = []
    for part in parts[1:]:
        instance_id, _, phase = part.partition("=")
        changes.append((instance_id, phase))
    return int(parts[0]), changes


def discard_pending(session: AsyncSession) -> None:
    """Forget queued events and notifications (after a rollback)."""
    session.info.pop(_PENDING_EVENTS, None)
    session.info.pop(_PENDING_NOTIFY, None)
