"""A live service for the CLI and SDK tests, and a way to run the CLI against it."""

from __future__ import annotations

import asyncio
import os
import pty
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import ADMIN_TOKEN
from tests.e2e.service import Service, running_service
from tests.e2e.upgrade_helpers import versions_env


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str


COLOUR_SWITCHES = ("FORCE_COLOR", "NO_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "COLUMNS")
"""Variables with which rich would colour (or not) whatever the stream is."""


def cli_env(url: str, token: str | None) -> dict[str, str]:
    """This environment with CHROMA_ORCH_URL / CHROMA_ORCH_TOKEN set, and rich left
    to tell a terminal from a pipe by itself."""
    env = {**os.environ, "CHROMA_ORCH_URL": url, "TERM": "xterm-256color"}
    for name in ("CHROMA_ORCH_TOKEN", *COLOUR_SWITCHES):
        env.pop(name, None)
    if token is not None:
        env["CHROMA_ORCH_TOKEN"] = token
    return env


async def run_cli(*args: str, url: str, token: str | None = ADMIN_TOKEN) -> Result:
    """``python -m chroma_orch.cli ARGS`` with CHROMA_ORCH_URL / CHROMA_ORCH_TOKEN set."""
    env = cli_env(url, token)
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


def _on_terminal(args: tuple[str, ...], env: dict[str, str], stream: str) -> Result:
    """Run the CLI with ``stream`` (stdout or stderr) on a pseudo-terminal, the other piped."""
    master, slave = pty.openpty()
    streams = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, stream: slave}
    command = (sys.executable, "-m", "chroma_orch.cli", *args)
    with subprocess.Popen(command, env=env, **streams) as process:  # type: ignore[call-overload]
        os.close(slave)
        chunks = []
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
        os.close(master)
        piped = process.communicate(timeout=90)[0 if stream == "stderr" else 1].decode()
    shown = b"".join(chunks).decode()
    both = (shown, piped) if stream == "stdout" else (piped, shown)
    return Result(process.returncode, *both)


async def run_on_terminal(
    *args: str, url: str, token: str | None = ADMIN_TOKEN, stream: str = "stdout"
) -> Result:
    """Like ``run_cli``, with ``stream`` a terminal: what a person at it sees."""
    return await asyncio.wait_for(
        asyncio.to_thread(_on_terminal, args, cli_env(url, token), stream), 90
    )


@pytest.fixture
async def failing_service(database_url: str, tmp_path: Path) -> AsyncIterator[Service]:
    """Every server start fails at once (the launcher's interpreter is /bin/false)
    and is not retried."""
    env = {"CHROMA_ORCH_LOCAL__PYTHON": "/bin/false", "CHROMA_ORCH_RECONCILER__RESTART_LIMIT": "0"}
    async with running_service(database_url, tmp_path / "data", **env) as svc:
        yield svc


@pytest.fixture
async def upgrade_service(database_url: str, tmp_path: Path) -> AsyncIterator[Service]:
    """The real service, its local runtime knowing a second Chroma version and broken
    ones (``tests/e2e/upgrade_helpers.py``), as ``tests/e2e``'s fixture of that name."""
    env = versions_env(tmp_path / "tools") | {"CHROMA_ORCH_UPGRADES__TIMEOUT": "60"}
    async with running_service(database_url, tmp_path / "data", **env) as svc:
        yield svc
