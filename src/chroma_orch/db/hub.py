"""Wakes in-process waiters when the event log grows (on any replica).

The listener hands over each events notification; its payload names the newest
sequence number and the instances concerned (with the phases they went to), so
only their waiters wake, only for a phase they wait for, and re-read what they
care about from the database. A notification without ids
(too many to fit, or "" after the listener reconnected, when one may have been
missed) wakes everyone.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from chroma_orch.db.outbox import parse_events_payload


class EventHub:
    def __init__(self) -> None:
        self.latest_seq = 0
        self._waiters: defaultdict[str, dict[asyncio.Event, frozenset[str] | None]] = defaultdict(
            dict
        )

    def notify(self, payload: str) -> None:
        seq, changes = parse_events_payload(payload)
        if seq is not None:
            self.latest_seq = max(self.latest_seq, seq)
        if not changes:  # no ids: wake everyone
            changes = [(key, "") for key in self._waiters]
        for key, phase in changes:
            for event, phases in self._waiters.get(key, {}).items():
                if phases is None or not phase or phase in phases:
                    event.set()

    @contextmanager
    def watch(
        self, instance_id: str, phases: Iterable[str] | None = None
    ) -> Iterator[asyncio.Event]:
        """An event set whenever ``instance_id`` changes, for the life of the block;
        with ``phases``, only by changes to one of those phases (or by changes that
        name none, such as a new request).

        Register before reading the current state, so no change falls in between.
        """
        event = asyncio.Event()
        self._waiters[instance_id][event] = None if phases is None else frozenset(phases)
        try:
            yield event
        finally:
            waiters = self._waiters[instance_id]
            waiters.pop(event, None)
            if not waiters:
                del self._waiters[instance_id]


async def wait_for_event(event: asyncio.Event, timeout: float) -> bool:
    """Wait for ``event`` and clear it; False when ``timeout`` passed first."""
    try:  # not wait_for: on 3.11 it can swallow a cancellation (loops.py)
        async with asyncio.timeout(timeout):
            await event.wait()
    except TimeoutError:
        return False
    event.clear()
    return True
