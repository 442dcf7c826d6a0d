"""A live service for the CLI and SDK tests, and a way to run the CLI against it."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import ADMIN_TOKEN
from tests.e2e.service import Service, running_service


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str


async def run_cli(*args: str, url: str, token: str | None = ADMIN_TOKEN) -> Result:
    """``python -m chroma_orch.cli ARGS`` with CHROMA_ORCH_URL / CHROMA_ORCH_TOKEN set."""
    env = {**os.environ, "CHROMA_ORCH_URL": url}
    env.pop("CHROMA_ORCH_TOKEN", None)
    if token is not None:
        env["CHROMA_ORCH_TOKEN"] = token
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "chroma_orch.cli",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 90)
    assert process.returncode is not None
    return Result(process.returncode, stdout.decode(), stderr.decode())


@pytest.fixture
async def failing_service(database_url: str, tmp_path: Path) -> AsyncIterator[Service]:
    """Every server start fails at once (the launcher's interpreter is /bin/false)
    and is not retried."""
    env = {"CHROMA_ORCH_LOCAL__PYTHON": "/bin/false", "CHROMA_ORCH_RECONCILER__RESTART_LIMIT": "0"}
    async with running_service(database_url, tmp_path / "data", **env) as svc:
        yield svc
