from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from chroma_orch.app import create_app
from chroma_orch.settings import EventsSettings, ReconcilerSettings
from tests.conftest import ADMIN_TOKEN, make_settings
from tests.events.live import LiveServer

LiveFactory = Callable[..., AbstractAsyncContextManager[LiveServer]]


@pytest.fixture
def live_factory(database_url: str, tmp_path: Path) -> LiveFactory:
    """Start the API (reconciler off) under uvicorn with ``EventsSettings(**events)``
    (``send_buffer``: see ``LiveServer``)."""

    @asynccontextmanager
    async def factory(send_buffer: int | None = None, **events: Any) -> AsyncIterator[LiveServer]:
        values: dict[str, Any] = {"heartbeat_interval": 0.5} | events
        settings = make_settings(
            database_url,
            tmp_path / "data",
            reconciler=ReconcilerSettings(enabled=False),
            events=EventsSettings(**values),
        )
        async with LiveServer(create_app(settings), send_buffer=send_buffer) as server:
            yield server

    return factory


@pytest.fixture
async def live(live_factory: LiveFactory) -> AsyncIterator[LiveServer]:
    async with live_factory() as server:
        yield server


@pytest.fixture
async def http(live: LiveServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=live.url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=30
    ) as client:
        yield client
