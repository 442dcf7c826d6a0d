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

EVENTS_CHANNEL = "chroma_orch_events"
INTENTS_CHANNEL = "chroma_orch_intents"
_EVENTS_LOCK_KEY = 0x63686F7265766E74  # "chorevnt": serialises event writers
_PENDING_EVENTS = "chroma_orch.pending_events"
_PENDING_NOTIFY = "chroma_orch.pending_notify"


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
        ctes = [
            f"locked AS (SELECT pg_advisory_xact_lock(${first}){source})",
            f"""appended AS (
    INSERT INTO events (type, instance_id, tenant_id, before, after)
    SELECT e.type, e.instance_id, e.tenant_id, e.before, e.after
    FROM locked, jsonb_to_recordset(${first + 1}::text::jsonb)
        AS e(type text, instance_id uuid, tenant_id uuid, before jsonb, after jsonb)
    RETURNING seq
)""",
        ]
        items = [
            "(SELECT max(seq) FROM appended)",
            f"(SELECT pg_notify(${first + 2}, max(seq)::text || ${first + 3}) FROM appended "
            "HAVING count(*) > 0)",
        ]
        rows = json.dumps(events, default=str)
        params = [_EVENTS_LOCK_KEY, rows, EVENTS_CHANNEL, events_payload_ids(events)]
    for channel, payload in (notify or {}).items():
        n = first + len(params)
        items.append(f"(SELECT pg_notify(${n}, ${n + 1}){source})")
        params += [channel, payload]
    return ctes, ", ".join(items), params


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


def events_payload_ids(events: list[dict[str, Any]]) -> str:
    """What follows the sequence number in an events notification: ``" <instance id>
    ..."``, so listeners wake only the waiters concerned; empty when the ids would
    not fit in a notification (then everyone wakes)."""
    ids = sorted({str(e["instance_id"]) for e in events if e["instance_id"] is not None})
    suffix = "".join(f" {i}" for i in ids)
    return suffix if len(suffix) < 7000 else ""


def parse_events_payload(payload: str) -> tuple[int | None, list[str]]:
    """The last sequence number and the instance ids of an events notification."""
    parts = payload.split()
    if not parts or not parts[0].isdigit():
        return None, []
    return int(parts[0]), parts[1:]


def discard_pending(session: AsyncSession) -> None:
    """Forget queued events and notifications (after a rollback)."""
    session.info.pop(_PENDING_EVENTS, None)
    session.info.pop(_PENDING_NOTIFY, None)
