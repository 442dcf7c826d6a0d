"""The data layer's CPU per request: what a unit of work through a SQLAlchemy
session costs beside the statement itself.

    python bench/unit_of_work.py [--requests 3000] [--rounds 5]

Ours: a status read as the API does it (``api/deps.py``, ``db/rows.py``): a session
from the app's factory, the driver's connection under it (``db/driver.py``), the
compiled statement (``db/statements.py``), the row built as an ORM object, then
``db.outbox.commit`` and the session closed. Floor: the same compiled statement on
a connection taken from an asyncpg pool and given back. One client, one request at
a time, on an embedded PostgreSQL; rounds alternate ours and the floor. Prints JSON:
per request, the CPU of this process (µs; PostgreSQL's own is not counted) and the
wall time, best and median over the rounds, and ours ÷ floor.

2026-12-03 (2-core machine, quiet): see docs/scale.md, "The API's throughput".
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import fresh_database, postgres, workdir  # noqa: E402
from chroma_orch.db import rows  # noqa: E402
from chroma_orch.db.listener import asyncpg_dsn  # noqa: E402
from chroma_orch.db.migrate import upgrade  # noqa: E402
from chroma_orch.db.models import Instance, Tenant  # noqa: E402
from chroma_orch.db.outbox import commit  # noqa: E402
from chroma_orch.db.session import create_engine, create_session_factory  # noqa: E402

Request = Callable[[uuid.UUID], Awaitable[Any]]


async def timed(request: Request, instance_id: uuid.UUID, count: int) -> tuple[float, float]:
    """CPU and wall seconds per request over ``count`` requests."""
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(count):
        await request(instance_id)
    return (time.process_time() - cpu) / count, (time.perf_counter() - wall) / count


def _figures(samples: list[tuple[float, float]]) -> dict[str, float]:
    cpu = [c * 1e6 for c, _ in samples]
    wall = [w * 1e6 for _, w in samples]
    return {
        "cpu_us_best": round(min(cpu), 1),
        "cpu_us_median": round(statistics.median(cpu), 1),
        "wall_us_best": round(min(wall), 1),
        "wall_us_median": round(statistics.median(wall), 1),
    }


async def main(args: argparse.Namespace) -> dict[str, Any]:
    with workdir() as base, postgres(base) as admin_url:
        database = await fresh_database(admin_url)
        engine = create_engine(database)
        await upgrade(engine)
        sessions = create_session_factory(engine)
        instance_id = uuid.uuid4()
        async with sessions() as session:
            tenant = Tenant(id=uuid.uuid4(), name="bench")
            session.add(tenant)
            await session.flush()
            session.add(
                Instance(
                    id=instance_id,
                    tenant_id=tenant.id,
                    name="one",
                    runtime="sim",
                    desired_state="running",
                    phase="running",
                )
            )
            await session.commit()
        pool = await asyncpg.create_pool(asyncpg_dsn(database), min_size=1, max_size=1)

        async def ours(instance: uuid.UUID) -> Any:
            async with sessions() as session:
                found = await rows.fetch_instance(session, instance)
                await commit(session)
                return found

        async def floor(instance: uuid.UUID) -> Any:
            async with pool.acquire() as con:
                return await rows._FETCH.fetchrow(con, id=instance)

        try:
            for request in (ours, floor):  # warm: statements prepared, pools filled
                await timed(request, instance_id, 200)
            measured: dict[str, list[tuple[float, float]]] = {"ours": [], "floor": []}
            for _ in range(args.rounds):
                measured["ours"].append(await timed(ours, instance_id, args.requests))
                measured["floor"].append(await timed(floor, instance_id, args.requests))
        finally:
            await pool.close()
            await engine.dispose()
    result = {name: _figures(samples) for name, samples in measured.items()}
    return {
        "benchmark": "unit_of_work",
        "requests_per_round": args.requests,
        "rounds": args.rounds,
        **result,
        "cpu_vs_floor": round(result["ours"]["cpu_us_best"] / result["floor"]["cpu_us_best"], 2),
        "cpu_added_us": round(result["ours"]["cpu_us_best"] - result["floor"]["cpu_us_best"], 1),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=5)
    print(json.dumps(asyncio.run(main(parser.parse_args())), indent=2))
