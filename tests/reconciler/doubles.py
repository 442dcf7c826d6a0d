"""A runtime double with one failure mode per instance name (JupyterHub-style):

- ``slow-*``: ready after 0.3 s;  ``never-*``: never answers;
- ``crash-*``: exits 0.1 s after each start;  ``stubborn-*``: refuses to stop twice;
- ``hung``: instances whose server lives and answers no heartbeat;
- ``full-*``: the first ``capacity_failures`` starts find no capacity (a
  ``StartFailedError`` of class ``CAPACITY``, as ECS's "Capacity is unavailable").
Anything else starts at once and runs until stopped. ``crash`` takes the class of
the exit (``ExitCause``): an AWS-initiated stop is ``INFRASTRUCTURE``.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from chroma_orch.runtimes.base import (
    Endpoint,
    ExitCallback,
    ExitCause,
    Handle,
    InstanceSpec,
    Observation,
    ObservedState,
    PortReservations,
    RuntimeUnavailableError,
    StartFailedError,
    check_launch_by,
)


@dataclass
class FakeServer:
    serial: int
    name: str
    port: int
    ready_at: float | None
    alive: bool = True
    exit_cause: ExitCause = ExitCause.CRASH


class FakeRuntime:
    name = "fake"
    allocates_ports = True
    visibility_grace = 0.0
    launch_budget = 1.0

    def __init__(
        self, ports: PortReservations, start_timeout: float = 0.5, capacity_failures: int = 3
    ) -> None:
        self.ports = ports
        """Where its servers' ports come from, as for the local runtime."""
        self.start_timeout = start_timeout
        self.wake_timeout = 5.0
        self.servers: dict[str, FakeServer] = {}
        self.starts: Counter[str] = Counter()
        self.stops: Counter[str] = Counter()
        self.deleted: list[str] = []
        self.kept: list[str] = []
        """Instances deleted with their data kept."""
        self.refusals: Counter[str] = Counter()
        self.capacity_failures = capacity_failures
        self.no_capacity: Counter[str] = Counter()
        self.hung: set[str] = set()
        """Instances whose server lives but answers no heartbeat."""
        self.heartbeats: Counter[str] = Counter()
        self.heartbeat_calls: list[int] = []
        """How many servers each heartbeat call asked about."""
        self._callbacks: list[ExitCallback] = []
        self._serial = 0
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self, spec: InstanceSpec) -> Handle:
        current = self.servers.get(spec.instance_id)
        if current is not None and current.alive:
            return self._handle(spec.instance_id, current, spec.generation)
        check_launch_by(spec)  # (adopting launches nothing)
        if (
            spec.name.startswith("full")
            and self.no_capacity[spec.instance_id] < self.capacity_failures
        ):
            self.no_capacity[spec.instance_id] += 1
            raise StartFailedError("CapacityUnavailable", "no capacity", ExitCause.CAPACITY)
        port = spec.port or await self.ports.reserve(spec.instance_id, lambda _: True)
        self._serial += 1
        self.starts[spec.instance_id] += 1
        now = time.monotonic()
        ready_at = {"slow": now + 0.3, "never": None}.get(spec.name.split("-")[0], now)
        server = FakeServer(self._serial, spec.name, port, ready_at)
        self.servers[spec.instance_id] = server
        if spec.name.startswith("crash"):
            task = asyncio.create_task(self._crash_later(spec.instance_id, server))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return self._handle(spec.instance_id, server, spec.generation)

    def _handle(self, instance_id: str, server: FakeServer, generation: int) -> Handle:
        return Handle(generation, {"id": instance_id, "serial": server.serial, "port": server.port})

    async def _crash_later(self, instance_id: str, server: FakeServer) -> None:
        await asyncio.sleep(0.1)
        self.crash(instance_id, server)

    def crash(
        self,
        instance_id: str,
        server: FakeServer | None = None,
        cause: ExitCause = ExitCause.CRASH,
    ) -> None:
        server = server or self.servers[instance_id]
        server.alive = False
        server.exit_cause = cause
        for callback in self._callbacks:
            callback(instance_id)

    def _observe(self, handle: Handle) -> Observation:
        server = self.servers.get(handle.data["id"])
        if server is None or server.serial != handle.data["serial"] or not server.alive:
            own = server is not None and server.serial == handle.data["serial"]
            cause = server.exit_cause if server is not None and own else ExitCause.CRASH
            reason = "ProcessExited" if cause is ExitCause.CRASH else "Retired"
            return Observation(ObservedState.EXITED, reason=reason, message="exit 1", cause=cause)
        if server.ready_at is None or time.monotonic() < server.ready_at:
            return Observation(ObservedState.STARTING)
        return Observation(ObservedState.RUNNING, endpoint=Endpoint("127.0.0.1", server.port))

    async def wait_ready(self, handle: Handle, timeout: float) -> Observation:
        deadline = time.monotonic() + timeout
        while True:
            observation = self._observe(handle)
            if observation.state is not ObservedState.STARTING or time.monotonic() >= deadline:
                return observation
            await asyncio.sleep(0.01)

    async def poll(self, handles: Mapping[str, Handle]) -> dict[str, Observation]:
        return {key: self._observe(handle) for key, handle in handles.items()}

    async def heartbeat(self, servers: Mapping[str, Endpoint], timeout: float) -> dict[str, bool]:
        self.heartbeats.update(list(servers))
        self.heartbeat_calls.append(len(servers))
        answers = {}
        for key, endpoint in servers.items():
            server = self.servers.get(key)
            serving = server is not None and server.alive and server.port == endpoint.port
            answers[key] = serving and key not in self.hung
        return answers

    async def stop(self, handle: Handle) -> None:
        server = self.servers.get(handle.data["id"])
        if server is None or server.serial != handle.data["serial"] or not server.alive:
            return
        if server.name.startswith("stubborn") and self.refusals[handle.data["id"]] < 2:
            self.refusals[handle.data["id"]] += 1
            raise RuntimeUnavailableError("refusing to stop")
        server.alive = False
        self.stops[handle.data["id"]] += 1

    async def delete(self, instance_id: str, handle: Handle | None, keep_data: bool) -> None:
        self.deleted.append(instance_id)
        if keep_data:
            self.kept.append(instance_id)

    async def logs(self, instance_id: str, handle: Handle | None, tail: int) -> list[str]:
        return ["fake"][-tail:]

    async def follow_logs(
        self, instance_id: str, handle: Handle | None, tail: int
    ) -> AsyncIterator[list[str]]:
        yield ["fake"][-tail:]

    async def discover(self) -> dict[str, Handle]:
        return {
            key: self._handle(key, server, 0)
            for key, server in self.servers.items()
            if server.alive
        }

    def on_exit(self, callback: ExitCallback) -> None:
        self._callbacks.append(callback)

    async def aclose(self) -> None:
        for task in self._tasks:
            task.cancel()


class DataFakeRuntime(FakeRuntime):
    """A ``FakeRuntime`` whose instances keep their data in directories under ``root``
    (``runtimes.base.DataDirectories``), so the reconciler's snapshots, restores and
    deletes work on real files, through the real store and archive format."""

    def __init__(self, ports: PortReservations, root: Path) -> None:
        super().__init__(ports)
        self.root = root

    def data_path(self, instance_id: str) -> Path:
        return self.root / instance_id

    async def replace_data(self, instance_id: str, fill: Callable[[Path], Awaitable[None]]) -> None:
        staging = self.root / f".{instance_id}.staging"
        shutil.rmtree(staging, ignore_errors=True)
        try:
            await fill(staging)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        shutil.rmtree(self.data_path(instance_id), ignore_errors=True)
        staging.rename(self.data_path(instance_id))

    async def delete(self, instance_id: str, handle: Handle | None, keep_data: bool) -> None:
        await super().delete(instance_id, handle, keep_data)
        if not keep_data:
            shutil.rmtree(self.data_path(instance_id), ignore_errors=True)
