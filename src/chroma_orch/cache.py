"""A small bounded cache with expiry, for lookups that are safe to reuse briefly."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class TtlCache(Generic[K, V]):
    """A small dict cache: entries expire after ``ttl`` seconds or when the
    ``generation`` they were stored under is no longer the current one."""

    def __init__(self, ttl: float, size: int, clock: Callable[[], float] = time.monotonic):
        self.ttl = ttl
        self.size = size
        self._clock = clock
        self._entries: dict[K, tuple[float, int, V]] = {}

    def get(self, key: K, generation: int = 0) -> V | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, stored_generation, value = entry
        if expires <= self._clock() or stored_generation != generation:
            self._entries.pop(key, None)
            return None
        return value

    def put(self, key: K, value: V, generation: int = 0) -> None:
        if self.ttl <= 0:
            return
        if len(self._entries) >= self.size and key not in self._entries:
            self._entries.clear()  # crude but bounded; a refill costs one lookup per key
        self._entries[key] = (self._clock() + self.ttl, generation, value)

    def drop(self, key: K) -> None:
        self._entries.pop(key, None)

    def clear(self) -> None:
        self._entries.clear()
