"""Wakes in-process waiters when the event log grows (on any replica).

The listener hands over each events notification; its payload names the newest
sequence number and the instances concerned, so only their waiters wake and
re-read what they care about from the database. A notification without ids
(too many to fit, or "" after the listener reconnected, when one may have been
missed) wakes everyone.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager

from chroma_orch.events.log import parse_events_payload


class EventHub:
    def __init__(self) -> None:
        self.latest_seq = 0
        self._waiters: defaultdict[str, set[asyncio.Event]] = defaultdict(set)

    def notify(self, payload: str) -> None:
        seq, instance_ids = parse_events_payload(payload)
        if seq is not None:
            self.latest_seq = max(self.latest_seq, seq)
        keys = instance_ids if instance_ids else list(self._waiters)
        for key in keys:
            for event in self._waiters.get(key, ()):
                event.set()

    @contextmanager
    def watch(self, instance_id: str) -> Iterator[asyncio.Event]:
        """An event set whenever ``instance_id`` changes, for the life of the block.

        Register before reading the current state, so no change falls in between.
        """
        event = asyncio.Event()
        self._waiters[instance_id].add(event)
        try:
            yield event
        finally:
            waiters = self._waiters[instance_id]
            waiters.discard(event)
            if not waiters:
                del self._waiters[instance_id]


async def wait_for_event(event: asyncio.Event, timeout: float) -> bool:
    """Wait for ``event`` and clear it; False when ``timeout`` passed first."""
    try:
        await asyncio.wait_for(event.wait(), timeout)
    except TimeoutError:
        return False
    event.clear()
    return True
