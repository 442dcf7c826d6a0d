"""examples/events_client.py keeps an exact table across a service restart."""

from __future__ import annotations

import asyncio
import importlib.util
import uuid
from pathlib import Path
from types import ModuleType

from chroma_orch.app import create_app
from tests.conftest import ADMIN_TOKEN
from tests.events.conftest import LiveFactory
from tests.events.live import LiveServer, emit
from tests.helpers import wait_for

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "events_client.py"


def _load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("events_client", EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def test_example_client_resumes_after_a_restart(live_factory: LiveFactory) -> None:
    example = _load_example()
    seen: list[int] = []
    handle = example.InstanceTable.handle

    def recording(self: object, message: dict[str, object]) -> None:
        if message["type"] == "event":
            seen.append(int(str(message["seq"])))
        handle(self, message)

    example.InstanceTable.handle = recording
    async with live_factory() as live:
        port, settings = live.port, live.ctx.settings
        follower = asyncio.create_task(example.follow(live.ws_url, ADMIN_TOKEN))

        async def got(n: int) -> bool:
            return len(seen) >= n

        async def subscribed() -> bool:
            return live.stream.subscriber_count == 1

        try:
            await wait_for(subscribed, timeout=10)
            first = await emit(live.ctx, 3, tenant_id=uuid.uuid4())

            await wait_for(lambda: got(3), timeout=10)
        except BaseException:
            follower.cancel()
            raise
    try:
        async with LiveServer(
            create_app(settings), port=port
        ) as again:  # same port, new process state
            last = await emit(again.ctx, 4)
            await wait_for(lambda: got(7), timeout=15)
    finally:
        follower.cancel()
        await asyncio.gather(follower, return_exceptions=True)
    assert seen == list(range(first - 2, first + 1)) + list(range(last - 3, last + 1))
