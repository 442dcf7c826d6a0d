"""Admission limits: a per-token request rate, refused tokens per client address,
and a service-wide cap on starts."""

from __future__ import annotations

import ipaddress
import time
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from chroma_orch.db.models import Instance, table_of
from chroma_orch.db.statements import one_of
from chroma_orch.domain.states import DesiredState, Phase
from chroma_orch.errors import RateLimitedError, TooManyAuthFailuresError, TooManyStartsError

_MAX_TRACKED = 10_000


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """Token buckets per key (an API token's id, a client address), in memory (a
    per-replica limit), for the ``_MAX_TRACKED`` keys seen last."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self._buckets: OrderedDict[Hashable, _Bucket] = OrderedDict()

    def check(self, key: Hashable) -> None:
        """Take one request from ``key``'s bucket or raise ``RateLimitedError``."""
        wait = self.wait(key)
        if wait:
            raise RateLimitedError(
                f"more than {self.rate:g} requests/s (burst {self.burst})", retry_after=wait
            )
        self.spend(key)

    def wait(self, key: Hashable) -> float:
        """Seconds until ``key`` may make a request; 0 when it may now."""
        bucket = self._refilled(key)
        return 0.0 if bucket.tokens >= 1 else (1 - bucket.tokens) / self.rate

    def spend(self, key: Hashable) -> None:
        """Take one request from ``key``'s bucket, if it has one left."""
        bucket = self._refilled(key)
        bucket.tokens = max(0.0, bucket.tokens - 1)

    def _refilled(self, key: Hashable) -> _Bucket:
        now = time.monotonic()
        bucket = self._buckets.pop(key, None) or _Bucket(float(self.burst), now)
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.rate)
        bucket.updated = now
        self._buckets[key] = bucket
        if len(self._buckets) > _MAX_TRACKED:
            self._buckets.popitem(last=False)
        return bucket


class AuthFailures:
    """Refused tokens per client address, per replica: after ``limit`` refusals
    within ``window`` seconds (refilled evenly), the address gets 429 for a while.
    An IPv6 address counts with its /64 (one host's usual share)."""

    def __init__(self, limit: int, window: float) -> None:
        self._buckets = RateLimiter(limit / window, limit)
        self.limit, self.window = limit, window

    def check(self, client: str) -> None:
        """Raise ``TooManyAuthFailuresError`` if ``client`` has no refusal left."""
        wait = self._buckets.wait(_client_key(client))
        if wait:
            raise TooManyAuthFailuresError(
                f"more than {self.limit} invalid tokens from this address in {self.window:g} s",
                retry_after=wait,
            )

    def record(self, client: str) -> None:
        """Count a refused token from ``client``."""
        self._buckets.spend(_client_key(client))


def _client_key(client: str) -> str:
    try:
        address = ipaddress.ip_address(client)
    except ValueError:
        return client  # not an address (a Unix socket's peer, say)
    if address.version == 6:
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


ON_THEIR_WAY_UP = (Instance.desired_state == DesiredState.RUNNING.value) & one_of(
    table_of(Instance).c.phase, (Phase.PENDING.value, Phase.STARTING.value)
)
"""Instances that count against the service-wide cap on concurrent starts."""

STARTS_OWED = ON_THEIR_WAY_UP | (
    (Instance.desired_state == DesiredState.RUNNING.value)
    & (Instance.observed_generation < Instance.restart_generation)
)
"""Those and the instances whose restart the reconciler has not begun yet (still
``running`` on the old server): what the rollout loop counts before starting more."""


def enforce_start_cap(starting: int, limit: int) -> None:
    """Raise ``TooManyStartsError`` when ``starting`` instances already fill ``limit``."""
    if starting >= limit:
        raise TooManyStartsError(
            f"{starting} instances are starting; the limit is {limit}", retry_after=2
        )


async def check_concurrent_starts(session: AsyncSession, limit: int) -> None:
    """Raise ``TooManyStartsError`` when ``limit`` instances are already on their way up."""
    starting = await session.scalar(
        select(func.count()).select_from(Instance).where(ON_THEIR_WAY_UP)
    )
    enforce_start_cap(starting or 0, limit)
