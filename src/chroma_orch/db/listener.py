"""One LISTEN connection per replica, reconnecting by itself, fanning out to callbacks."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Callable

import asyncpg
from sqlalchemy.engine import make_url

log = logging.getLogger(__name__)

Callback = Callable[[str], None]


def asyncpg_dsn(url: str) -> str:
    """A SQLAlchemy ``postgresql+asyncpg://`` URL as a DSN asyncpg accepts."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


PING_INTERVAL = 1.0
"""Seconds between the listener's pings of PostgreSQL (``SELECT 1``)."""


class PgListener:
    """Delivers NOTIFY payloads to callbacks; after a reconnect, calls each with ""
    so subscribers resynchronise from the database (a notification may be lost).

    ``heard`` says whether every notification committed more than ``within`` seconds
    ago has surely arrived: a ping's answer comes after every notification committed
    before PostgreSQL read it, on the same connection. A connection that dies without
    a close (a failover behind a virtual address, a network partition) is noticed only
    when a ping times out; until then ``connected`` stays set, and only ``heard`` tells."""

    def __init__(self, url: str, application_name: str) -> None:
        self._dsn = asyncpg_dsn(url)
        self._application_name = application_name
        self._callbacks: dict[str, list[Callback]] = defaultdict(list)
        self.connected = asyncio.Event()
        self._proven_at: float | None = None
        """``time.monotonic()`` when the newest answered ping was sent."""

    def heard(self, within: float) -> bool:
        """Connected, and a ping sent at most ``within`` seconds ago was answered."""
        proven = self._proven_at
        return (
            self.connected.is_set() and proven is not None and time.monotonic() - proven <= within
        )

    def subscribe(self, channel: str, callback: Callback) -> None:
        self._callbacks[channel].append(callback)

    def _dispatch(self, channel: str, payload: str) -> None:
        for callback in self._callbacks.get(channel, []):
            try:
                callback(payload)
            except Exception:
                log.exception("notification callback failed channel=%s", channel)

    async def run(self) -> None:
        delay = 0.1
        while True:
            try:
                await self._listen_until_closed()
                delay = 0.1
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("listener connection failed error=%s retry_in=%.1fs", exc, delay)
            self.connected.clear()
            self._proven_at = None
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def _listen_until_closed(self) -> None:
        conn: asyncpg.Connection = await asyncpg.connect(
            self._dsn, server_settings={"application_name": self._application_name}
        )
        closed = asyncio.Event()
        conn.add_termination_listener(lambda _conn: closed.set())
        try:
            for channel in self._callbacks:
                await conn.add_listener(
                    channel, lambda _c, _pid, ch, payload: self._dispatch(ch, payload)
                )
            self._proven_at = time.monotonic()  # listening from here on
            self.connected.set()
            for channel in self._callbacks:
                self._dispatch(channel, "")
            while not closed.is_set():
                try:
                    await asyncio.wait_for(closed.wait(), timeout=PING_INTERVAL)
                except TimeoutError:
                    # proves the notifications arrive, and notices a dead server
                    # between notifications (or one gone silent)
                    sent = time.monotonic()
                    await conn.execute("SELECT 1", timeout=5.0)
                    self._proven_at = sent
        finally:
            if not conn.is_closed():
                await conn.close(timeout=2)
