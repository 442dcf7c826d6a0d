"""The small expiring cache: expiry, generations, the size bound, ttl 0."""

from __future__ import annotations

from chroma_orch.cache import TtlCache


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_entries_expire_after_ttl() -> None:
    clock = Clock()
    cache: TtlCache[str, int] = TtlCache(2.0, 10, clock)
    cache.put("a", 1)
    clock.now += 1.9
    assert cache.get("a") == 1
    clock.now += 0.2
    assert cache.get("a") is None


def test_an_older_generation_is_a_miss_and_dropped() -> None:
    cache: TtlCache[str, int] = TtlCache(60.0, 10)
    cache.put("a", 1, generation=3)
    assert cache.get("a", generation=3) == 1
    assert cache.get("a", generation=4) is None
    assert cache.get("a", generation=3) is None  # dropped on the stale read


def test_size_is_bounded() -> None:
    cache: TtlCache[int, int] = TtlCache(60.0, 3)
    for key in range(10):
        cache.put(key, key)
    assert sum(cache.get(key) is not None for key in range(10)) <= 3
    assert cache.get(9) == 9  # the newest is kept


def test_ttl_zero_keeps_nothing() -> None:
    cache: TtlCache[str, int] = TtlCache(0.0, 10)
    cache.put("a", 1)
    assert cache.get("a") is None


def test_drop_and_clear() -> None:
    cache: TtlCache[str, int] = TtlCache(60.0, 10)
    cache.put("a", 1)
    cache.put("b", 2)
    cache.drop("a")
    assert cache.get("a") is None
    assert cache.get("b") == 2
    cache.clear()
    assert cache.get("b") is None
