from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.e2e.service import Service, kill_chroma_processes


@pytest.fixture
async def service(database_url: str, tmp_path: Path) -> AsyncIterator[Service]:
    data_dir = tmp_path / "data"
    svc = Service(database_url, data_dir)
    await svc.start()
    try:
        yield svc
    finally:
        await svc.stop()
        kill_chroma_processes(data_dir)
