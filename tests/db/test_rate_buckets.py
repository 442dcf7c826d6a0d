"""API rate buckets shared through PostgreSQL: one statement refills by the time
elapsed (never beyond the burst), takes the tokens a call needs and answers the
wait once the bucket is short; replicas drawing on one bucket together stay within
it."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

from sqlalchemy import func, update

from chroma_orch.db.models import ApiRateBucket
from chroma_orch.db.rate_buckets import AccountRateLimitsInDb
from chroma_orch.db.session import create_engine, create_session_factory
from chroma_orch.runtimes.base import AccountRateLimits


async def test_the_statement_takes_refills_up_to_the_burst_and_answers_the_wait(
    database_url: str,
) -> None:
    engine = create_engine(database_url)
    sessions = create_session_factory(engine)
    buckets = AccountRateLimitsInDb(sessions)
    try:
        # a new bucket starts full: five tokens at once, the sixth waits about 1 s
        assert [await buckets.take("b", burst=5, rate=1.0) for _ in range(5)] == [0.0] * 5
        assert 0.5 < await buckets.take("b", burst=5, rate=1.0) <= 1.0
        # the next three queue behind it: they wait for the refill of four tokens
        assert 3.5 < await buckets.take("b", burst=5, rate=1.0, n=3) <= 4.0
        async with sessions() as session:  # a minute passes
            await session.execute(
                update(ApiRateBucket).values(updated_at=func.now() - timedelta(minutes=1))
            )
            await session.commit()
        # refilled, but only up to the burst: five at once, then a wait again
        assert await buckets.take("b", burst=5, rate=1.0, n=5) == 0.0
        assert 0.5 < await buckets.take("b", burst=5, rate=1.0) <= 1.0
        # another bucket is counted on its own
        assert await buckets.take("other", burst=5, rate=1.0, n=5) == 0.0
    finally:
        await engine.dispose()


async def test_two_replicas_together_stay_within_one_bucket(database_url: str) -> None:
    """Rate 20/s, burst 5: two replicas (engines of their own) racing for 1 s get at
    most 5 + 20 * 1 grants between them (+1: the window's edges), not that each."""
    engines = [create_engine(database_url) for _ in range(2)]
    replicas: list[AccountRateLimits] = [
        AccountRateLimitsInDb(create_session_factory(engine)) for engine in engines
    ]
    granted = 0
    started = time.monotonic()
    deadline = started + 1.0

    async def race(limits: AccountRateLimits) -> None:
        nonlocal granted
        while True:
            await limits.acquire("aws:test:run", burst=5, rate=20.0)
            if time.monotonic() > deadline:
                return
            granted += 1

    try:
        await asyncio.gather(*(race(limits) for limits in replicas for _ in range(3)))
    finally:
        for engine in engines:
            await engine.dispose()
    assert 5 <= granted <= 5 + 20 * 1 + 1
