"""The append-only event log and the notifications that travel with a commit.

Every state change calls ``record_event``; ``commit`` writes the pending events
while holding a transaction-scoped advisory lock, so sequence numbers become
visible in commit order and a reader that has seen ``seq`` N has seen every
event below N (no gaps for ``since=`` resumes). NOTIFY is sent inside the same
transaction, so PostgreSQL delivers it only if the commit succeeds.

The lock is one for the whole service, so how long it is held bounds how many
writes commit per second. A statement that commits by itself (no transaction
begun) takes it and commits inside PostgreSQL. A longer transaction stages its
events in transaction-local settings first, then sends the append, ``COMMIT`` and
a new ``BEGIN`` as one simple-protocol message: the lock is taken and released
inside one round trip, never across a turn of the client's event loop (which,
for a busy replica, is milliseconds: every other writer would wait that long).
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
    ColumnElement,
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
    exists,
    func,
    insert,
    literal,
    select,
    true,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.ext.asyncio import AsyncSession

from chroma_orch.db.driver import driver
from chroma_orch.db.locks import LockKey
from chroma_orch.db.models import Event, table_of
from chroma_orch.db.statements import Statement, compiled, compiled_literal

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


_EVENTS = bindparam("events", type_=Text)
"""The events to append, as JSON text (``events_json``)."""
_NOTIFY = bindparam("notify", type_=Text)
"""The notifications to send, a JSON object of channel: payload (``notify_json``)."""
_STAGE_EVENTS = bindparam("stage_events", type_=Text)
"""The events to stage for ``commit``, as JSON text."""
_STAGE_NOTIFY = bindparam("stage_notify", type_=Text)
"""The notifications to stage for ``commit``, as JSON text."""
_STAGED_EVENTS = "chroma_orch.staged_events"
_STAGED_NOTIFY = "chroma_orch.staged_notify"
"""The transaction-local settings that hold what was staged."""
_STAGED = "chroma_orch.staged"
"""``session.info`` key: a statement of the transaction staged events."""


def _recordset(events: ColumnElement[Any]) -> TableValuedAlias:
    """``jsonb_to_recordset(events)``: the events of the JSON array text ``events``."""
    return (
        func.jsonb_to_recordset(cast(events, JSONB))
        .table_valued(
            column("type", String),
            column("instance_id", UUID),
            column("tenant_id", UUID),
            column("before", JSONB),
            column("after", JSONB),
        )
        .render_derived(name="e", with_types=True)
    )


def appending(gate: FromClause | None) -> Appending:
    """What appends the events of ``:events`` (a JSON array) inside a larger
    statement and sends the notifications of ``:notify``, or stages those of
    ``:stage_events`` and ``:stage_notify`` for ``commit``, only if ``gate`` (a CTE
    or subquery), when given, yields a row: the CTEs that take the ordering lock
    (only when there are events) and insert the events, and the select-list items
    (the last sequence number, the events channel's notification, the others, the
    staging). ``event_values`` gives the four parameters. The lock is held until
    the transaction ends: only a statement that commits by itself appends."""
    parts = _appending(gate, _EVENTS, _NOTIFY)
    written = true() if gate is None else exists(select(literal(1)).select_from(gate))
    stage = [
        select(_staging(_STAGED_EVENTS, _STAGE_EVENTS, "[]"))
        .where(written, func.jsonb_array_length(cast(_STAGE_EVENTS, JSONB)) > 0)
        .scalar_subquery()
        .label("staged_events"),
        select(_staging(_STAGED_NOTIFY, _STAGE_NOTIFY, "{}"))
        .where(written, cast(_STAGE_NOTIFY, JSONB) != cast("{}", JSONB))
        .scalar_subquery()
        .label("staged_notify"),
    ]
    return Appending(parts.ctes, [*parts.items, *stage])


def _staging(setting: str, value: ColumnElement[Any], empty: str) -> ColumnElement[Any]:
    """``value`` (JSON text) added to the transaction-local ``setting``: an array
    extended, an object merged (a later payload for a channel wins)."""
    current = func.coalesce(func.nullif(func.current_setting(setting, true()), ""), empty)
    merged = cast(current, JSONB).op("||")(cast(value, JSONB))
    return func.set_config(setting, cast(merged, Text), true())


def _appending(
    gate: FromClause | None, events: ColumnElement[Any], notify: ColumnElement[Any]
) -> Appending:
    """The CTEs and items that append ``events`` and send ``notify`` (JSON text)."""
    locked_q = select(func.pg_advisory_xact_lock(_LOCK_KEY).label("locked"))
    if gate is not None:
        locked_q = locked_q.select_from(gate)
    locked = locked_q.where(func.jsonb_array_length(cast(events, JSONB)) > 0).cte("locked")
    e = _recordset(events)
    source = select(e.c.type, e.c.instance_id, e.c.tenant_id, e.c.before, e.c.after)
    appended = (
        insert(_E)
        .from_select(
            ["type", "instance_id", "tenant_id", "before", "after"],
            source.select_from(locked).join(e, true()),
        )
        .returning(_E.c.seq, _E.c.instance_id, _E.c.after)
        .cte("appended")
    )
    return Appending([locked, appended], _notifications(appended, gate, notify))


def _notifications(
    appended: CTE, gate: FromClause | None, notify: ColumnElement[Any]
) -> list[Label[Any]]:
    """The last sequence number, the events channel's notification of what was
    appended, and the notifications of ``:notify`` (only if ``gate`` yields a row)."""
    ids = func.string_agg(
        distinct(
            " "
            + cast(appended.c.instance_id, Text)
            + func.coalesce("=" + appended.c.after["phase"].astext, "")
        ),
        "",
    )
    # "<last seq> <instance id>[=<phase it went to>] ...", so listeners wake only
    # the waiters concerned; without ids (none, or too many to fit) everyone wakes
    payload = cast(func.max(appended.c.seq), Text) + func.coalesce(
        case((func.length(ids) < _PAYLOAD_IDS_LIMIT, ids)), ""
    )
    pairs = func.jsonb_each_text(cast(notify, JSONB)).table_valued("key", "value").alias("n")
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
    parts = _appending(None, _EVENTS, _NOTIFY)
    return compiled("append_events", select(*parts.items).add_cte(*parts.ctes))


_APPEND = _append_all()

_STAGE = compiled(
    "stage_events",
    select(
        _staging(_STAGED_EVENTS, _EVENTS, "[]").label("events"),
        _staging(_STAGED_NOTIFY, _NOTIFY, "{}").label("notify"),
    ),
)
"""Events and notifications recorded in Python (``record_event``), staged with
those the transaction's statements staged (bound parameters need the extended
protocol, which sends one statement a message)."""


def _append_staged() -> Statement:
    staged = [
        func.coalesce(func.nullif(func.current_setting(setting, true()), ""), empty)
        for setting, empty in ((_STAGED_EVENTS, "[]"), (_STAGED_NOTIFY, "{}"))
    ]
    parts = _appending(None, *staged)
    return compiled_literal("append_staged_events", select(*parts.items).add_cte(*parts.ctes))


_APPEND_STAGED = _append_staged()
_APPEND_AND_COMMIT = "; ".join((_APPEND_STAGED.sql, "COMMIT", "BEGIN"))
"""The staged events appended under the ordering lock, the transaction committed
(the lock released) and a new, empty one begun, as one simple-protocol message:
the session's own COMMIT then ends the empty one (SQLAlchemy began the first
and will end one)."""


def event_values(
    in_transaction: bool, events: Sequence[Mapping[str, Any]], notify: Mapping[str, str]
) -> dict[str, str]:
    """The parameters of ``appending`` for a write's ``events`` and ``notify``:
    appended by the statement when it commits by itself, staged for ``commit``
    when it runs inside a transaction (then call ``staged`` once it wrote)."""
    now, later = ((), events) if in_transaction else (events, ())
    return {
        "events": events_json(now),
        "notify": notify_json({} if in_transaction else notify),
        "stage_events": events_json(later),
        "stage_notify": notify_json(notify if in_transaction else {}),
    }


def staged(session: AsyncSession) -> None:
    """Note that a statement of the session's transaction staged events (``commit``
    appends them)."""
    session.info[_STAGED] = True


async def write_with_events(
    session: AsyncSession,
    statement: Statement,
    params: Mapping[str, Any],
    *,
    events: Sequence[Mapping[str, Any]] = (),
    notify: Mapping[str, str] | None = None,
    begin: bool = False,
    written: str = "id",
) -> Mapping[str, Any] | None:
    """Run ``statement`` (built with ``appending``) with ``params``; its first row.

    When nothing began the session's transaction (and ``begin`` is false) it is a
    unit of its own: it appends ``events`` and sends ``notify`` itself, committing by
    itself. Inside a transaction it stages them, and ``commit`` appends them once
    the row's ``written`` column says the statement wrote (not None)."""
    notify = notify or {}
    con = await driver(session, begin=begin)
    in_transaction = con.is_in_transaction()
    row = await statement.fetchrow(con, **params, **event_values(in_transaction, events, notify))
    if in_transaction and (events or notify) and row is not None and row[written] is not None:
        staged(session)
    return row


async def commit(session: AsyncSession) -> None:
    """Write pending events and notifications, then commit.

    Without a transaction begun, one statement takes the lock, appends, notifies
    and commits by itself. Inside one, the unit's ORM changes are flushed, the
    events staged, then appended and committed in one message
    (``_APPEND_AND_COMMIT``), so the lock is never held across a round trip.
    """
    events: list[dict[str, Any]] = session.info.pop(_PENDING_EVENTS, [])
    notifications: dict[str, str] = session.info.pop(_PENDING_NOTIFY, {})
    written = session.info.pop(_STAGED, False)
    if events or notifications or written:
        await session.flush()  # the unit's ORM changes commit with its events
        con = await driver(session, begin=False)
        values = {"events": events_json(events), "notify": notify_json(notifications)}
        if con.is_in_transaction():
            if events or notifications:
                await _STAGE.execute(con, **values)
            await con.execute(_APPEND_AND_COMMIT)
        else:  # nothing staged: staging happens only inside a transaction
            await _APPEND.execute(con, **values)
    await session.commit()


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
    session.info.pop(_STAGED, None)  # the settings went with the transaction


async def newest_seq(session: AsyncSession) -> int:
    """The newest sequence number in the event log (0: none yet)."""
    return await session.scalar(select(func.max(Event.seq))) or 0
