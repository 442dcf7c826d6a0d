"""Several in-process replicas of the service on one database, all on one moto ECS."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx

from chroma_orch.app import create_app
from chroma_orch.runtimes.ecs.runtime import EcsRuntime
from chroma_orch.settings import EcsSettings
from tests.conftest import ADMIN_TOKEN, make_settings
from tests.ecs.conftest import CallLog, cluster_tasks, instance_of, reconciler_settings


@asynccontextmanager
async def ecs_replicas(
    database_url: str,
    tmp_path: Path,
    ecs_settings: EcsSettings,
    calls: CallLog,
    count: int,
    **reconciler: Any,
) -> AsyncIterator[list[httpx.AsyncClient]]:
    """``count`` apps (each with its reconciler and replica id) sharing ``calls``;
    yields an admin HTTP client per replica."""
    async with AsyncExitStack() as stack:
        clients: list[httpx.AsyncClient] = []
        for n in range(count):
            settings = make_settings(
                database_url,
                tmp_path / f"data-{n}",
                runtime="ecs",
                ecs=ecs_settings,
                reconciler=reconciler_settings(**reconciler),
            )
            app = create_app(settings)
            await stack.enter_async_context(app.router.lifespan_context(app))
            runtime = getattr(app.state.ctx.runtime, "inner", app.state.ctx.runtime)
            assert isinstance(runtime, EcsRuntime)
            calls.attach(runtime)
            client = httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app),
                base_url=f"http://replica-{n}",
                headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
                timeout=30,
            )
            clients.append(await stack.enter_async_context(client))
        yield clients


async def running_tasks_by_instance(moto_url: str) -> dict[str, int]:
    """How many tasks ECS wants running, per instance tag."""
    counts: dict[str, int] = {}
    for task in await cluster_tasks(moto_url):
        key = instance_of(task) or "untagged"
        counts[key] = counts.get(key, 0) + 1
    return counts
