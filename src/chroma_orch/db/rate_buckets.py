"""Token buckets shared by every replica, in ``api_rate_buckets``: a cloud API's
budget is counted per account (AWS: per account and region), so the replicas of
one deployment draw on one bucket, not one each.

One statement (``take_rate_tokens``) refills a bucket by the time elapsed since it
was last counted (at most ``burst`` tokens), takes ``n`` tokens and answers how
long the caller must wait before its call. Tokens may go negative: a caller that
finds the bucket short reserves its tokens all the same and waits until the refill
has paid them (a GCRA-style reservation), so waiters on every replica are served
in the order they asked, with one round trip each and no retry loop. The database
clock (``clock_timestamp()``) is the only clock, so replicas' clocks need not agree.
A caller cancelled while waiting leaves its tokens spent: the bucket errs towards
fewer calls, never more.
"""

from __future__ import annotations

import asyncio

from sqlalchemy import Float, String, bindparam, cast, extract, func
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chroma_orch.db.driver import driver
from chroma_orch.db.models import ApiRateBucket, table_of
from chroma_orch.db.statements import compiled

BUCKETS = table_of(ApiRateBucket)

_NAME = bindparam("name", type_=String)
_N = bindparam("n", type_=Float)
_BURST = bindparam("burst", type_=Float)
_RATE = bindparam("rate", type_=Float)
_ELAPSED = cast(extract("epoch", func.clock_timestamp() - BUCKETS.c.updated_at), Float)
_INSERTED = pg_insert(BUCKETS).values(
    name=_NAME, tokens=_BURST - _N, updated_at=func.clock_timestamp()
)
TAKE = compiled(
    "take_rate_tokens",
    _INSERTED.on_conflict_do_update(
        index_elements=[BUCKETS.c.name],
        set_={
            "tokens": func.least(_BURST, BUCKETS.c.tokens + _RATE * func.greatest(_ELAPSED, 0.0))
            - _N,
            "updated_at": func.clock_timestamp(),
        },
    ).returning((func.greatest(-BUCKETS.c.tokens, 0.0) / _RATE).label("wait_s")),
)
"""Refill bucket ``:name`` (at most ``:burst`` tokens, ``:rate`` per second since it
was last counted), take ``:n`` tokens; answers the seconds to wait before the call
(0 when the bucket had them). A new bucket starts full."""


class AccountRateLimitsInDb:
    """``runtimes.base.AccountRateLimits`` in ``api_rate_buckets``: one statement per
    acquire, shared by every replica using the database."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.sessions = sessions

    async def take(self, bucket: str, burst: int, rate: float, n: int = 1) -> float:
        """Take ``n`` tokens; answers the seconds the caller must wait."""
        if burst < 1 or rate <= 0 or n < 1:
            raise ValueError("a rate bucket needs burst >= 1, rate > 0 and n >= 1")
        async with self.sessions() as session:
            con = await driver(session, begin=False)
            wait = await TAKE.fetchval(con, name=bucket, n=n, burst=burst, rate=rate)
            await session.commit()
        return float(wait)

    async def acquire(self, bucket: str, burst: int, rate: float, n: int = 1) -> None:
        wait = await self.take(bucket, burst, rate, n)
        if wait > 0:
            await asyncio.sleep(wait)
