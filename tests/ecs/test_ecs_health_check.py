"""The ECS container healthCheck is a bash command (the Chroma image has bash, no
curl): run here with bash against a real Chroma server, it passes while the server
answers and fails, within its own timeout, once the server hangs (SIGSTOP)."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from chroma_orch.runtimes.base import InstanceSpec, ObservedState, ServerSpec
from chroma_orch.runtimes.ecs.settings import EcsSettings
from chroma_orch.runtimes.ecs.tasks import health_check, server_definition
from chroma_orch.runtimes.local.runtime import LocalRuntime
from chroma_orch.settings import LocalRuntimeSettings
from tests.e2e.service import free_port


@pytest.fixture
async def chroma(tmp_path: Path) -> AsyncIterator[tuple[int, int]]:
    """A real Chroma server: its port and pid."""
    runtime = LocalRuntime(LocalRuntimeSettings(stop_grace=5.0), tmp_path)
    port = free_port()
    handle = await runtime.start(InstanceSpec("hc", "t1", "db", 1, port=port))
    try:
        ready = await runtime.wait_ready(handle, 60)
        assert ready.state is ObservedState.RUNNING, ready
        yield port, int(handle.data["pid"])
    finally:
        os.kill(int(handle.data["pid"]), signal.SIGCONT)
        await runtime.stop(handle)
        await runtime.aclose()


async def _check(command: list[str]) -> int:
    assert command[0] == "CMD"
    process = await asyncio.create_subprocess_exec(*command[1:])
    return await asyncio.wait_for(process.wait(), 30)


async def test_the_health_check_asks_chromas_heartbeat(chroma: tuple[int, int]) -> None:
    port, pid = chroma
    check = health_check(EcsSettings(container_port=port))
    assert check["timeout"] >= 5  # bash gives up after 4 s (read -t 4)
    assert await _check(check["command"]) == 0
    os.kill(pid, signal.SIGSTOP)
    assert await _check(check["command"]) != 0
    os.kill(pid, signal.SIGCONT)
    assert await _check(check["command"]) == 0
    assert await _check(health_check(EcsSettings(container_port=free_port()))["command"]) != 0


def test_the_task_definition_carries_it_unless_turned_off() -> None:
    (container,) = server_definition(EcsSettings(), ServerSpec())["containerDefinitions"]
    assert container["healthCheck"] == health_check(EcsSettings())
    settings = EcsSettings(container_health_check=False)
    (container,) = server_definition(settings, ServerSpec())["containerDefinitions"]
    assert "healthCheck" not in container
