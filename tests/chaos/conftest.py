"""moto's server for the ECS fault tests (the fixtures of tests/ecs, shared here)."""

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.e2e.service import kill_chroma_processes
from tests.ecs.conftest import _aws_credentials, _aws_proxy, aws, ecs_settings, moto_url

__all__ = ["_aws_credentials", "_aws_proxy", "aws", "ecs_settings", "moto_url"]


@pytest.fixture
async def data_dir(tmp_path: Path) -> AsyncIterator[Path]:
    """The service's data directory; Chroma servers left running in it are killed."""
    path = tmp_path / "data"
    yield path
    kill_chroma_processes(path)
