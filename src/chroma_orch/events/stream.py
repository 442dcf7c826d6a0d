"""Fan-out of the event log to WebSocket subscribers, one ``EventStream`` per replica.

A NOTIFY on the events channel carries the newest sequence number. The stream
answers it with one query for the rows after its cursor (shared by every
subscriber of the replica), serialises each row once and offers it to the
bounded queue of every subscriber that may see it. Because events become
visible in sequence order (see ``db.outbox``), the cursor never skips a row.

A subscriber whose queue is full does not slow anyone: its queue is dropped and
it is marked to resync (``Subscriber.take_gap``); its socket then sends a fresh
snapshot and reads what it missed from the database itself.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import defaultdict, deque
from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chroma_orch.db.listener import PgListener
from chroma_orch.db.models import Event
from chroma_orch.db.outbox import EVENTS_CHANNEL, parse_events_payload
from chroma_orch.events import queries
from chroma_orch.events.queries import Scope
from chroma_orch.loops import Loops
from chroma_orch.settings import EventsSettings
from chroma_orch.telemetry.metrics import WEBSOCKET_SUBSCRIBERS

log = logging.getLogger(__name__)

_RETRY_MAX = 5.0


class Subscriber:
    """One socket's bounded queue of serialised events, fed by ``EventStream``.

    ``gap`` is the newest sequence number the socket must read from the database
    (set when it subscribes, and when its queue overflowed): the queue only holds
    events after it.
    """

    def __init__(self, scope: Scope, limit: int, gap: int) -> None:
        self.scope = scope
        self.limit = limit
        self._items: deque[tuple[int, str]] = deque()
        self._ready = asyncio.Event()
        self._gap: int | None = gap
        self._overflowed = False
        self.overflows = 0

    def offer(self, seq: int, frame: str) -> None:
        """Queue an event without ever waiting; on overflow drop the queue instead."""
        if len(self._items) >= self.limit:
            self._items.clear()
            self._gap = seq
            self._overflowed = True
            self.overflows += 1
        else:
            self._items.append((seq, frame))
        self._ready.set()

    def take_gap(self) -> tuple[int, bool] | None:
        """``(gap, overflowed)`` once, when the socket has a range to read itself."""
        if self._gap is None:
            return None
        gap, overflowed = self._gap, self._overflowed
        self._gap, self._overflowed = None, False
        return gap, overflowed

    @property
    def idle(self) -> bool:
        return not self._items and self._gap is None

    async def next(self, timeout: float) -> tuple[int, str] | None:
        """The next queued event; None after ``timeout`` or when a gap appeared."""
        while not self._items:
            if self._gap is not None:
                return None
            self._ready.clear()
            try:  # asyncio.timeout: no task per wait, as wait_for makes on Python 3.11
                async with asyncio.timeout(timeout):
                    await self._ready.wait()
            except TimeoutError:
                return None
        return self._items.popleft()


class EventStream:
    """Reads new events once per notification and fans them out to subscribers."""

    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], settings: EventsSettings
    ) -> None:
        self.sessions = sessions
        self.settings = settings
        self.cursor = 0
        """Every event up to this sequence number has been offered to subscribers."""
        self.fetches = 0
        """Queries run for notifications (one per round, whatever the subscriber count)."""
        self._wake = asyncio.Event()
        self._fetching = False
        self._by_tenant: defaultdict[uuid.UUID | None, set[Subscriber]] = defaultdict(set)

    async def prime(self) -> None:
        async with self.sessions() as session:
            _, newest = await queries.log_bounds(session)
        self.cursor = newest or 0

    def notify(self, payload: str) -> None:
        """Listener callback: ``"<seq> ..."`` after a commit, ``""`` after a reconnect."""
        seq, _ = parse_events_payload(payload)
        if seq is not None and not self._by_tenant and not self._fetching:
            # Nobody to deliver to: move the cursor without reading (a subscriber that
            # comes later reads what it needs from the log itself). Sequence numbers
            # become visible in commit order, so every event up to ``seq`` is committed.
            self.cursor = max(self.cursor, seq)
            return
        if seq is None or seq > self.cursor:
            self._wake.set()

    def subscribe(self, scope: Scope) -> Subscriber:
        subscriber = Subscriber(scope, self.settings.subscriber_queue, gap=self.cursor)
        self._by_tenant[scope.tenant_id].add(subscriber)
        WEBSOCKET_SUBSCRIBERS.inc()
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        group = self._by_tenant.get(subscriber.scope.tenant_id)
        if group is not None and subscriber in group:
            group.discard(subscriber)
            WEBSOCKET_SUBSCRIBERS.dec()
            if not group:
                del self._by_tenant[subscriber.scope.tenant_id]

    @property
    def subscriber_count(self) -> int:
        return sum(len(group) for group in self._by_tenant.values())

    def dispatch(self, rows: Sequence[Event]) -> None:
        admins = self._by_tenant.get(None, set())
        for row in rows:
            frame = queries.to_message(row).frame()
            tenants = self._by_tenant.get(row.tenant_id, set()) if row.tenant_id else set()
            for subscriber in (*admins, *tenants):
                if subscriber.scope.sees(row.tenant_id, row.instance_id):
                    subscriber.offer(row.seq, frame)
            self.cursor = row.seq

    async def fetch_once(self) -> int:
        """Read and dispatch every event after the cursor; returns how many."""
        count = 0
        while True:
            self.fetches += 1
            async with self.sessions() as session:
                rows = await queries.read_events(session, self.cursor, self.settings.fetch_batch)
                await session.commit()
            self.dispatch(rows)
            count += len(rows)
            if len(rows) < self.settings.fetch_batch:
                return count

    async def run(self) -> None:
        delay = 0.1
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                self._fetching = True
                try:
                    await self.fetch_once()
                finally:
                    self._fetching = False
                delay = 0.1
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception(
                    "event fan-out read failed cursor=%s retry_in=%.1fs", self.cursor, delay
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, _RETRY_MAX)
                self._wake.set()


async def start(
    sessions: async_sessionmaker[AsyncSession],
    settings: EventsSettings,
    loops: Loops,
    listener: PgListener,
) -> EventStream:
    """The replica's stream, its fan-out registered in ``loops``, fed by ``listener``
    (old events are purged by ``db.retention``)."""
    stream = EventStream(sessions, settings)
    await stream.prime()
    listener.subscribe(EVENTS_CHANNEL, stream.notify)
    loops.add("events-fanout", stream.run)
    return stream
