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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    CTE,
    BigInteger,
    FromClause,
    Label,
    String,
    TableValuedAlias,
    Text,
    bindparam,
    case,
    cast,
    column,
    distinct,
    func,
    insert,
    select,
    true,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.ext.asyncio import AsyncSession

from chroma_orch.db.driver import driver
from chroma_orch.db.locks import LockKey
from chroma_orch.db.models import Event, table_of
from chroma_orch.db.statements import Statement, compiled

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


def _recordset() -> TableValuedAlias:
    """``jsonb_to_recordset(:events)``: the events of the JSON array ``events``."""
    return (
        func.jsonb_to_recordset(cast(_EVENTS, JSONB))
        .table_valued(
            column("type", String),
            column("instance_id", UUID),
            column("tenant_id", UUID),
            column("before", JSONB),
            column("after", JSONB),
        )
        .render_derived(name="e", with_types=True)
    )


_EVENTS = bindparam("events", type_=Text)
"""The events to append, as JSON text (``events_json``)."""
_NOTIFY = bindparam("notify", type_=Text)
"""The notifications to send, a JSON object of channel: payload (``notify_json``)."""


def appending(gate: FromClause | None) -> Appending:
    """What appends the events of ``:events`` (a JSON array) inside a larger
    statement and sends the notifications of ``:notify``, only if ``gate`` (a CTE
    or subquery), when given, yields a row: the CTEs that take the ordering lock
    (only when there are events) and insert the events, and the select-list items
    (the last sequence number, the events channel's notification, the others). The
    lock is held until the transaction ends, which should be soon after."""
    locked_q = select(func.pg_advisory_xact_lock(_LOCK_KEY).label("locked"))
    if gate is not None:
        locked_q = locked_q.select_from(gate)
    locked = locked_q.where(func.jsonb_array_length(cast(_EVENTS, JSONB)) > 0).cte("locked")
    e = _recordset()
    source = select(e.c.type, e.c.instance_id, e.c.tenant_id, e.c.before, e.c.after)
    appended = (
        insert(_E)
        .from_select(
            ["type", "instance_id", "tenant_id", "before", "after"],
            source.select_from(locked).join(e, true()),
        )
        .returning(_E.c.seq, _E.c.instance_id, _E.c.after["phase"].astext.label("phase"))
        .cte("appended")
    )
    return Appending([locked, appended], _notifications(appended, gate))


def _notifications(appended: CTE, gate: FromClause | None) -> list[Label[Any]]:
    """The last sequence number, the events channel's notification of what was
    appended, and the notifications of ``:notify`` (only if ``gate`` yields a row)."""
    ids = func.string_agg(
        distinct(
            " " + cast(appended.c.instance_id, Text) + func.coalesce("=" + appended.c.phase, "")
        ),
        "",
    )
    # "<last seq> <instance id>[=<phase it went to>] ...", so listeners wake only
    # the waiters concerned; without ids (none, or too many to fit) everyone wakes
    payload = cast(func.max(appended.c.seq), Text) + func.coalesce(
        case((func.length(ids) < _PAYLOAD_IDS_LIMIT, ids)), ""
    )
    pairs = func.jsonb_each_text(cast(_NOTIFY, JSONB)).table_valued("key", "value").alias("n")
    others = select(func.count(func.pg_notify(pairs.c.key, pairs.c.value))).select_from(pairs)
    if gate is not None:
        others = others.select_from(gate)
    return [
        select(func.max(appended.c.seq)).scalar_subquery().label("last_seq"),
        select(func.pg_notify(_CHANNEL, payload))
        .select_from(appended)
        .having(func.count() > 0)
        .scalar_subquery()
        .label("events_notified"),
        others.scalar_subquery().label("notified"),
    ]


@dataclass(frozen=True)
class Appending:
    """The CTEs and select-list items of ``appending``."""

    ctes: list[CTE]
    items: list[Label[Any]]


def events_json(events: Sequence[Mapping[str, Any]]) -> str:
    """The value of ``:events`` for ``events``."""
    return json.dumps(list(events), default=str)


def notify_json(notify: Mapping[str, str]) -> str:
    """The value of ``:notify`` for ``notify`` (channel: payload)."""
    return json.dumps(dict(notify))


_E = table_of(Event)
_LOCK_KEY = bindparam("events_lock", int(LockKey.EVENTS), type_=BigInteger)
_CHANNEL = bindparam("events_channel", EVENTS_CHANNEL, type_=Text)


def _append_all() -> Statement:
    parts = appending(None)
    return compiled("append_events", select(*parts.items).add_cte(*parts.ctes))


_APPEND = _append_all()


def defer_events(
    session: AsyncSession, events: list[dict[str, Any]], notify: Mapping[str, str]
) -> None:
    """Leave a write's events and notifications to ``commit``: for a write inside a
    longer transaction, so the ordering lock is taken last and held only at the end
    (a statement that commits by itself folds them in with ``appending``)."""
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
        last_seq = await _APPEND.fetchval(
            await driver(session), events=events_json(events), notify=notify_json(notifications)
        )
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


async def newest_seq(session: AsyncSession) -> int:
    """The newest sequence number in the event log (0: none yet)."""
    return await session.scalar(select(func.max(Event.seq))) or 0
