"""Admission limits: a per-token request rate and a service-wide cap on starts."""

from __future__ import annotations

import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncSession

from chroma_orch.db.models import Instance
from chroma_orch.domain.states import DesiredState, Phase
from chroma_orch.errors import RateLimitedError, TooManyStartsError

_MAX_TRACKED_TOKENS = 10_000


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """Token buckets per API token, in memory (a per-replica limit)."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self._buckets: OrderedDict[uuid.UUID, _Bucket] = OrderedDict()

    def check(self, key: uuid.UUID) -> None:
        """Take one request from ``key``'s bucket or raise ``RateLimitedError``."""
        now = time.monotonic()
        bucket = self._buckets.pop(key, None) or _Bucket(float(self.burst), now)
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.rate)
        bucket.updated = now
        self._buckets[key] = bucket
        if len(self._buckets) > _MAX_TRACKED_TOKENS:
            self._buckets.popitem(last=False)
        if bucket.tokens < 1:
            wait = (1 - bucket.tokens) / self.rate
            raise RateLimitedError(
                f"more than {self.rate:g} requests/s (burst {self.burst})", retry_after=wait
            )
        bucket.tokens -= 1


ON_THEIR_WAY_UP = (Instance.desired_state == DesiredState.RUNNING) & Instance.phase.in_(
    (Phase.PENDING, Phase.STARTING)
)
"""Instances that count against the service-wide cap on concurrent starts."""
ON_THEIR_WAY_UP_SQL = str(
    ON_THEIR_WAY_UP.compile(
        dialect=postgresql.dialect(),  # type: ignore[no-untyped-call]
        compile_kwargs={"literal_binds": True},
    )
)
"""The same condition as SQL, for statements sent with the driver."""


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
