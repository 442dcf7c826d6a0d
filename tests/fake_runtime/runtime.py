"""The fake runtime's driver, honouring every promise of ``chroma_orch.runtimes.base``."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import replace

from chroma_orch.runtimes.base import (
    INSTANCE_ID,
    Architecture,
    Endpoint,
    ExitCallback,
    Handle,
    InstanceSpec,
    Observation,
    ObservedState,
    ServerSpec,
    SpecCheck,
    check_launch_by,
)
from tests.fake_runtime.settings import FakeRuntimeSettings
from tests.fake_runtime.world import FakeServer, World, world

_TICK = 0.01
VERSIONS = ["1.5.9", "1.5.8"]
"""The Chroma versions the fake runtime runs, its default first."""
MEMORY_MIB = (256, 8192)
CPU_UNITS = (256, 512, 1024, 2048, 4096)
_SMALL_CPU_MEMORY = 2048
"""The most memory a server of 256 CPU units may have (as on Fargate)."""
_FOLLOW_INTERVAL = 0.05


class FakeRuntime:
    """Handle data: ``instance_id``, ``serial`` (which server of the instance), ``port``."""

    name = "fake"
    allocates_ports = True
    visibility_grace = 0.0
    launch_budget = 2.0

    def __init__(self, settings: FakeRuntimeSettings) -> None:
        self.settings = settings
        self.start_timeout = settings.start_timeout
        self.wake_timeout = 5.0
        self.world: World = world(settings.world)
        self._callbacks: list[ExitCallback] = []

    async def start(self, spec: InstanceSpec) -> Handle:
        self.world.reach()
        _check_id(spec.instance_id)
        current = self.world.servers.get(spec.instance_id)
        if current is not None and current.alive:
            return _handle(current, spec.generation)  # adopt: never two servers
        check_launch_by(spec)
        serial = next(self.world.serials)
        port = spec.port if spec.port is not None else self.settings.first_port + serial
        ready_at = time.monotonic() + self.settings.ready_after
        server = FakeServer(spec.instance_id, serial, spec.generation, port, ready_at)
        server.spec = spec.server
        self.world.servers[spec.instance_id] = server
        self.world.data.add(spec.instance_id)
        self.world.say(spec.instance_id, f"starting generation={spec.generation} port={port}")
        return _handle(server, spec.generation)

    def chroma_versions(self) -> list[str]:
        return list(VERSIONS)

    def check_spec(self, spec: ServerSpec) -> SpecCheck:
        """A small ``SpecSupport``: versions ``VERSIONS``, memory in ``MEMORY_MIB``,
        CPU one of ``CPU_UNITS`` (256 units with at most 2048 MiB), x86_64 only."""
        resolved = replace(
            spec,
            cpu=spec.cpu or 1024,
            memory_mib=spec.memory_mib or 1024,
            architecture=spec.architecture or Architecture.X86_64,
            chroma_version=spec.chroma_version or VERSIONS[0],
        )
        return SpecCheck(resolved, _problems(resolved), {"memory": "not enforced (fake)"})

    async def wait_ready(self, handle: Handle, timeout: float) -> Observation:
        deadline = time.monotonic() + timeout
        while True:
            observation = self._observe(handle)
            if observation.state is not ObservedState.STARTING or time.monotonic() >= deadline:
                return observation
            await asyncio.sleep(_TICK)

    async def poll(self, handles: Mapping[str, Handle]) -> dict[str, Observation]:
        self.world.reach()
        return {key: self._observe(handle) for key, handle in handles.items()}

    async def heartbeat(self, servers: Mapping[str, Endpoint], timeout: float) -> dict[str, bool]:
        self.world.reach()
        answers = {}
        for key, endpoint in servers.items():
            server = self.world.servers.get(key)
            answers[key] = server is not None and server.alive and server.port == endpoint.port
        return answers

    async def stop(self, handle: Handle) -> None:
        self.world.reach()
        server = self._server(handle)
        if server is not None:
            self.world.exit(server, "Stopped", "stopped")

    async def delete(self, instance_id: str, handle: Handle | None, keep_data: bool) -> None:
        self.world.reach()
        _check_id(instance_id)
        server = self.world.servers.pop(instance_id, None)
        if server is not None:
            self.world.exit(server, "Stopped", "stopped")
        if not keep_data:
            self.world.data.discard(instance_id)
            self.world.logs.pop(instance_id, None)

    async def logs(self, instance_id: str, handle: Handle | None, tail: int) -> list[str]:
        return self.world.logs.get(instance_id, [])[-tail:] if tail > 0 else []

    async def follow_logs(
        self, instance_id: str, handle: Handle | None, tail: int
    ) -> AsyncIterator[list[str]]:
        lines = self.world.logs.get(instance_id, [])
        sent = len(lines)
        yield lines[-tail:] if tail > 0 else []
        while True:
            lines = self.world.logs.get(instance_id, [])
            if len(lines) > sent:
                yield lines[sent:]
                sent = len(lines)
            server = self._server(handle) if handle is not None else None
            if server is None:
                return
            await asyncio.sleep(_FOLLOW_INTERVAL)

    async def discover(self) -> dict[str, Handle]:
        self.world.reach()
        return {
            key: _handle(server, None) for key, server in self.world.servers.items() if server.alive
        }

    def on_exit(self, callback: ExitCallback) -> None:
        self._callbacks.append(callback)
        self.world.exit_callbacks.append(callback)

    async def aclose(self) -> None:
        for callback in self._callbacks:
            self.world.exit_callbacks.remove(callback)
        self._callbacks.clear()

    def _server(self, handle: Handle) -> FakeServer | None:
        """The live server the handle names (None once it exited or was replaced)."""
        server = self.world.servers.get(str(handle.data.get("instance_id")))
        if server is None or server.serial != handle.data.get("serial") or not server.alive:
            return None
        return server

    def _observe(self, handle: Handle) -> Observation:
        server = self.world.servers.get(str(handle.data.get("instance_id")))
        if server is None or server.serial != handle.data.get("serial"):
            return Observation(ObservedState.EXITED, reason="ProcessExited", message="gone")
        if not server.alive:
            return Observation(
                ObservedState.EXITED, reason=server.exit_reason, message=server.exit_message
            )
        if time.monotonic() < server.ready_at:
            return Observation(ObservedState.STARTING)
        return Observation(ObservedState.RUNNING, endpoint=Endpoint("127.0.0.1", server.port))


def _handle(server: FakeServer, generation: int | None) -> Handle:
    data = {"instance_id": server.instance_id, "serial": server.serial, "port": server.port}
    return Handle(generation, data)


def _check_id(instance_id: str) -> None:
    if not INSTANCE_ID.fullmatch(instance_id):
        raise ValueError(f"invalid instance id {instance_id!r}")


def _problems(spec: ServerSpec) -> list[str]:
    problems = []
    if spec.chroma_version not in VERSIONS:
        problems.append(
            f"Chroma {spec.chroma_version} is not available (available: {', '.join(VERSIONS)})"
        )
    low, high = MEMORY_MIB
    if spec.memory_mib is not None and not low <= spec.memory_mib <= high:
        problems.append(f"memory {spec.memory_mib} MiB is outside [{low}, {high}]")
    if spec.cpu not in CPU_UNITS:
        problems.append(f"{spec.cpu} CPU units is not one of {list(CPU_UNITS)}")
    elif spec.cpu == 256 and (spec.memory_mib or 0) > _SMALL_CPU_MEMORY:
        problems.append(f"{spec.memory_mib} MiB is not valid with 0.25 vCPU")
    if spec.architecture is not Architecture.X86_64:
        problems.append(f"architecture {spec.architecture} is not available")
    return problems
