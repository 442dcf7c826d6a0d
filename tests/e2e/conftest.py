"""End-to-end tests use the top-level ``service`` fixture (tests/conftest.py); the
upgrade tests, ``upgrade_service``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.e2e.service import Service, running_service
from tests.e2e.upgrade_helpers import versions_env


@pytest.fixture
async def upgrade_service(database_url: str, tmp_path: Path) -> AsyncIterator[Service]:
    """The real service, its local runtime knowing Chroma 1.5.8 beside the installed
    version, and two broken versions (``tests/e2e/upgrade_helpers.py``)."""
    env = versions_env(tmp_path / "tools") | {"CHROMA_ORCH_UPGRADES__TIMEOUT": "60"}
    async with running_service(database_url, tmp_path / "data", **env) as svc:
        yield svc
