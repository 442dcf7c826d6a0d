"""A small bounded cache with expiry, for lookups that are safe to reuse briefly.

``cachetools.TTLCache`` does the expiry and the bound (least recently used out
first); what is ours is the ``generation`` an entry is stored under, so that one
number moving on invalidates every entry read before it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Generic, TypeVar

from cachetools import TTLCache

K = TypeVar("K")
V = TypeVar("V")


class TtlCache(Generic[K, V]):
    """Entries expire after ``ttl`` seconds or when the ``generation`` they were
    stored under is no longer the current one; at most ``size`` are kept. A ``ttl``
    of 0 keeps nothing."""

    def __init__(self, ttl: float, size: int, clock: Callable[[], float] = time.monotonic):
        self.ttl = ttl
        self.size = size
        self._entries: TTLCache[K, tuple[int, V]] = TTLCache(
            maxsize=size, ttl=max(ttl, 0.0), timer=clock
        )

    def get(self, key: K, generation: int = 0) -> V | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        stored_generation, value = entry
        if stored_generation != generation:
            self._entries.pop(key, None)
            return None
        return value

    def put(self, key: K, value: V, generation: int = 0) -> None:
        if self.ttl > 0:
            self._entries[key] = (generation, value)

    def drop(self, key: K) -> None:
        self._entries.pop(key, None)

    def clear(self) -> None:
        self._entries.clear()
