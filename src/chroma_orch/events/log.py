"""The append-only event log and the notifications that travel with a commit.

Every state change calls ``record_event``; ``commit`` writes the pending events
while holding a transaction-scoped advisory lock, so sequence numbers become
visible in commit order and a reader that has seen ``seq`` N has seen every
event below N (no gaps for ``since=`` resumes). NOTIFY is sent inside the same
transaction, so PostgreSQL delivers it only if the commit succeeds.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import insert, text
from sqlalchemy.ext.asyncio import AsyncSession

from chroma_orch.db.models import Event

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
        {
            "type": type,
            "instance_id": instance_id,
            "tenant_id": tenant_id,
            "before": before,
            "after": after,
        }
    )


def notify_on_commit(session: AsyncSession, channel: str, payload: str = "") -> None:
    """Send ``NOTIFY channel, payload`` if and when ``session`` commits."""
    session.info.setdefault(_PENDING_NOTIFY, {})[channel] = payload


async def commit(session: AsyncSession) -> int | None:
    """Write pending events and notifications, then commit. Returns the last event seq."""
    events: list[dict[str, Any]] = session.info.pop(_PENDING_EVENTS, [])
    notifications: dict[str, str] = session.info.pop(_PENDING_NOTIFY, {})
    last_seq: int | None = None
    if events:
        await session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _EVENTS_LOCK_KEY})
        result = await session.execute(insert(Event).returning(Event.seq), events)
        last_seq = max(result.scalars().all())
        notifications[EVENTS_CHANNEL] = events_payload(last_seq, events)
    if notifications:
        calls = ", ".join(f"pg_notify(:c{n}, :p{n})" for n in range(len(notifications)))
        params: dict[str, str] = {}
        for n, (channel, payload) in enumerate(notifications.items()):
            params |= {f"c{n}": channel, f"p{n}": payload}
        await session.execute(text(f"SELECT {calls}"), params)
    await session.commit()
    return last_seq


def events_payload(last_seq: int, events: list[dict[str, Any]]) -> str:
    """``"<last seq> <instance id> ..."``: listeners wake only the waiters concerned.
    Just the sequence number when the ids would not fit in a notification."""
    ids = sorted({str(e["instance_id"]) for e in events if e["instance_id"] is not None})
    payload = " ".join([str(last_seq), *ids])
    return payload if len(payload) < 7000 else str(last_seq)


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
