"""The ``sim`` runtime's driver: every promise of ``chroma_orch.runtimes.base`` on a
simulated cloud (``cloud``), with ECS-like API rate limits, start phases and start
failures, and servers whose HTTP responders answer heartbeats (``responder``)."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import replace
from datetime import timedelta

from chroma_orch.runtimes.base import (
    INSTANCE_ID,
    AccountRateLimits,
    Architecture,
    Endpoint,
    ExitCallback,
    ExitCause,
    Handle,
    InstanceSpec,
    Observation,
    ObservedState,
    ServerSpec,
    SpecCheck,
    StartFailedError,
    StartPhase,
)
from chroma_orch.runtimes.ecs.sizes import size_problem
from chroma_orch.runtimes.ecs.throttle import LocalRateLimits
from chroma_orch.runtimes.heartbeat import heartbeats
from chroma_orch.runtimes.server_settings import settings_problems
from chroma_orch.runtimes.sim.cloud import Cloud, SimServer, cloud
from chroma_orch.runtimes.sim.launch import launch
from chroma_orch.runtimes.sim.settings import SimRuntimeSettings

_DESCRIBE_BATCH = 100
"""Servers per simulated DescribeTasks call (ECS's limit)."""
_FOLLOW_INTERVAL = 0.05
_START_FAILURES = {
    ExitCause.CAPACITY: ("CapacityUnavailable", "no Fargate capacity is available (simulated)"),
    ExitCause.CRASH: ("CannotStartContainerError", "the container failed to start (simulated)"),
}
ENFORCEMENT = {"cpu": "not enforced (simulated)", "memory": "not enforced (simulated)"}


class SimRuntime:
    """Handle data: ``instance_id``, ``serial`` (which server of the instance), ``port``."""

    name = "sim"
    allocates_ports = True

    def __init__(
        self, settings: SimRuntimeSettings, rate_limits: AccountRateLimits | None = None
    ) -> None:
        self.settings = settings
        self.cloud: Cloud = cloud(settings)
        self.rate_limits: AccountRateLimits = rate_limits or LocalRateLimits()
        self.start_timeout = settings.start_timeout
        self.wake_timeout = settings.wake_timeout
        self.visibility_grace = self.cloud.scaled(settings.visibility_lag)
        self._callbacks: list[ExitCallback] = []

    async def _call(self, category: str, n: int = 1) -> None:
        """One simulated API call of ``category``: within its rate budget, and only
        while the cloud is reachable."""
        self.cloud.reach()
        burst, rate = self.settings.api_limits[category]
        await self.rate_limits.acquire(f"sim:{category}", burst, rate, n)

    async def start(self, spec: InstanceSpec) -> Handle:
        _check_id(spec.instance_id)
        await self._call("run")
        current = self.cloud.servers.get(spec.instance_id)
        if current is not None and not current.exited:
            return _handle(current, spec.generation)  # adopt: never two servers
        fate = self.cloud.draws.fate()
        if fate.failure is not None:
            reason, message = _START_FAILURES[fate.failure]
            self.cloud.say(spec.instance_id, f"start failed: {reason}: {message}")
            raise StartFailedError(reason, message, fate.failure)
        server = await launch(self.cloud, spec, fate)
        return _handle(server, spec.generation)

    def chroma_versions(self) -> list[str]:
        return list(self.settings.chroma_versions)

    def check_spec(self, spec: ServerSpec) -> SpecCheck:
        """Fargate's sizes (``runtimes.ecs.sizes``), either architecture, the
        configured versions, the server settings' whitelist; defaults 1 vCPU, 2 GiB."""
        cpu, memory = spec.cpu or 1024, spec.memory_mib or 2048
        resolved = replace(
            spec,
            cpu=cpu,
            memory_mib=memory,
            architecture=spec.architecture or Architecture.X86_64,
            chroma_version=spec.chroma_version or self.settings.chroma_versions[0],
        )
        problems = settings_problems(resolved.settings)
        size = size_problem(cpu, memory)
        if size is not None:
            problems.append(size)
        if resolved.chroma_version not in self.settings.chroma_versions:
            available = ", ".join(self.settings.chroma_versions)
            problems.append(
                f"Chroma {resolved.chroma_version} is not available (available: {available})"
            )
        return SpecCheck(resolved, problems, ENFORCEMENT)

    async def wait_ready(self, handle: Handle, timeout: float) -> Observation:
        """Follows the start until it answers, exits or ``timeout`` passes (checking
        as often as a tenth of the simulated median start, at least every 10 ms)."""
        deadline = time.monotonic() + timeout
        tick = max(0.01, min(1.0, self.cloud.scaled(self.settings.start_median) / 10))
        while True:
            observation = self._observe(handle)
            if observation.state is not ObservedState.STARTING or time.monotonic() >= deadline:
                return observation
            await asyncio.sleep(min(tick, max(0.0, deadline - time.monotonic())))

    async def poll(self, handles: Mapping[str, Handle]) -> dict[str, Observation]:
        if handles:
            await self._call("describe", math.ceil(len(handles) / _DESCRIBE_BATCH))
        return {key: self._observe(handle) for key, handle in handles.items()}

    async def heartbeat(self, servers: Mapping[str, Endpoint], timeout: float) -> dict[str, bool]:
        """Asks each responder over HTTP, as the data plane reaches it."""
        return await heartbeats(servers, timeout)

    async def stop(self, handle: Handle) -> None:
        await self._call("stop")
        server = self._server(handle)
        if server is None or server.stopping_until is not None:
            return
        server.listener.close()  # a stopping server no longer answers
        grace = self.cloud.scaled(self.settings.stop_after)
        server.stopping_until = time.monotonic() + grace
        loop = asyncio.get_running_loop()
        server.timers.append(loop.call_later(grace, self._stopped, server))

    def _stopped(self, server: SimServer) -> None:
        self.cloud.exit(server, "Stopped", "stopped", ExitCause.CRASH)

    async def delete(self, instance_id: str, handle: Handle | None, keep_data: bool) -> None:
        _check_id(instance_id)
        await self._call("stop")
        server = self.cloud.servers.pop(instance_id, None)
        if server is not None:
            self.cloud.exit(server, "Stopped", "deleted", ExitCause.CRASH)
        if not keep_data:
            self.cloud.logs.pop(instance_id, None)

    async def logs(self, instance_id: str, handle: Handle | None, tail: int) -> list[str]:
        return list(self.cloud.logs.get(instance_id, ()))[-tail:] if tail > 0 else []

    async def follow_logs(
        self, instance_id: str, handle: Handle | None, tail: int
    ) -> AsyncIterator[list[str]]:
        """Ends once the handle's server is gone (output is per server, as on ECS)."""
        lines = list(self.cloud.logs.get(instance_id, ()))
        sent = len(lines)
        yield lines[-tail:] if tail > 0 else []
        while True:
            lines = list(self.cloud.logs.get(instance_id, ()))
            if len(lines) > sent:
                yield lines[sent:]
                sent = len(lines)
            if handle is None or self._server(handle) is None:
                return
            await asyncio.sleep(_FOLLOW_INTERVAL)

    async def discover(self) -> dict[str, Handle]:
        """The live servers, except those started within ``visibility_grace``."""
        await self._call("describe")
        seen_before = time.monotonic() - self.visibility_grace
        return {
            key: _handle(server, None)
            for key, server in self.cloud.servers.items()
            if not server.exited and server.started <= seen_before
        }

    def on_exit(self, callback: ExitCallback) -> None:
        self._callbacks.append(callback)
        self.cloud.exit_callbacks.append(callback)

    async def aclose(self) -> None:
        for callback in self._callbacks:
            self.cloud.exit_callbacks.remove(callback)
        self._callbacks.clear()

    def _server(self, handle: Handle) -> SimServer | None:
        """The live server the handle names (None once it exited or was replaced)."""
        server = self.cloud.servers.get(str(handle.data.get("instance_id")))
        if server is None or server.serial != handle.data.get("serial") or server.exited:
            return None
        return server

    def _observe(self, handle: Handle) -> Observation:
        server = self.cloud.servers.get(str(handle.data.get("instance_id")))
        if server is None or server.serial != handle.data.get("serial"):
            return Observation(ObservedState.EXITED, reason="TaskNotFound", message="gone")
        if server.exited:
            return Observation(
                ObservedState.EXITED,
                reason=server.exit_reason,
                message=server.exit_message,
                cause=server.exit_cause,
            )
        if server.stopping_until is not None:
            return Observation(ObservedState.STOPPING)
        return self._progress(server)

    def _progress(self, server: SimServer) -> Observation:
        """A live server's start phase by now (RUNNING once its responder answers)."""
        elapsed = (time.monotonic() - server.started) / self.settings.time_scale
        serving = server.listener.serving
        reached = [
            (phase, at)
            for phase, at in server.fate.phases
            if at <= elapsed and (serving or phase is not StartPhase.HEARTBEAT_ANSWERED)
        ]
        times = {
            phase: server.started_at + timedelta(seconds=self.cloud.scaled(at))
            for phase, at in reached
        }
        phase = reached[-1][0] if reached else None
        if serving:
            endpoint = Endpoint(self.settings.host, server.port)
            return Observation(ObservedState.RUNNING, endpoint, phase=phase, phase_times=times)
        return Observation(ObservedState.STARTING, phase=phase, phase_times=times)


def _handle(server: SimServer, generation: int | None) -> Handle:
    data = {"instance_id": server.instance_id, "serial": server.serial, "port": server.port}
    return Handle(generation, data)


def _check_id(instance_id: str) -> None:
    if not INSTANCE_ID.fullmatch(instance_id):
        raise ValueError(f"invalid instance id {instance_id!r}")
