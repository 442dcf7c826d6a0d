"""AWS counts its API rates per account and region, so the service's replicas share
one budget (token buckets in PostgreSQL), at AWS's published Fargate rates by
default (docs/ecs.md "Rate limits")."""

from __future__ import annotations

import asyncio
import time
from contextlib import AsyncExitStack
from pathlib import Path

import asyncpg

from chroma_orch.app import create_app
from chroma_orch.db.listener import asyncpg_dsn
from chroma_orch.runtimes.ecs.runtime import EcsRuntime
from chroma_orch.settings import EcsSettings
from tests.conftest import make_settings
from tests.ecs.conftest import CLUSTER, EcsService
from tests.helpers import bearer, create_tenant, wait_phase


def test_defaults_are_the_published_fargate_rates() -> None:
    limits = EcsSettings().api_limits
    assert limits["run"] == (20, 20.0)  # RunTask on Fargate: 20 calls/s, burst and sustained
    assert limits["launch"] == (100, 20.0)  # Fargate task launches: burst 100, 20/s
    assert limits["describe"] == (100, 20.0)


async def test_two_replicas_together_stay_within_the_account_budget(
    database_url: str, tmp_path: Path, ecs_settings: EcsSettings
) -> None:
    """DescribeTasks/ListTasks at 5/s, burst 5: two replicas racing for 3 s make at
    most 5 + 5 * 3 calls between them (+1 for the window's edges), not that each."""
    settings = ecs_settings.model_copy(update={"api_limits": {"describe": (5, 5.0)}})
    async with AsyncExitStack() as stack:
        runtimes = []
        for name in ("a", "b"):
            app = create_app(
                make_settings(database_url, tmp_path / name, runtime="ecs", ecs=settings)
            )
            await stack.enter_async_context(app.router.lifespan_context(app))
            runtime = getattr(app.state.ctx.runtime, "inner", app.state.ctx.runtime)
            assert isinstance(runtime, EcsRuntime)
            runtimes.append(runtime)
        granted = 0
        deadline = time.monotonic() + 3.0

        async def race(runtime: EcsRuntime) -> None:
            nonlocal granted
            while True:
                await runtime.api.call("ListTasks", cluster=CLUSTER, startedBy="nobody")
                if time.monotonic() > deadline:
                    return
                granted += 1

        await asyncio.gather(*(race(runtime) for runtime in runtimes for _ in range(3)))
    assert 5 <= granted <= 5 + 5 * 3 + 1


async def test_a_launch_draws_on_the_shared_buckets(
    ecs_service: EcsService, database_url: str
) -> None:
    """A RunTask takes one RunTask call and one task launch per task it starts from
    the buckets every replica shares."""
    _, token = await create_tenant(ecs_service.http, "acme")
    created = await ecs_service.http.post(
        "/v1/instances", json={"name": "main"}, headers=bearer(token)
    )
    await wait_phase(ecs_service.http, created.json()["instance"]["id"], "running")
    connection = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        rows = await connection.fetch("SELECT name, tokens FROM api_rate_buckets")
    finally:
        await connection.close()
    tokens = {row["name"]: row["tokens"] for row in rows}
    assert tokens["aws:us-east-1:run"] <= 19.0 + 1e-3  # at least one RunTask taken
    assert tokens["aws:us-east-1:launch"] <= 99.0 + 1e-3  # at least one task launched
