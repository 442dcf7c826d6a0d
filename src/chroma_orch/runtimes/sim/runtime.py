"""The ``sim`` runtime's driver: every promise of ``chroma_orch.runtimes.base`` on a
simulated cloud (``cloud``), with ECS-like API rate limits, start phases and start
failures, and servers whose HTTP responders answer heartbeats (``responder``)."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import replace

from chroma_orch.runtimes.base import (
    INSTANCE_ID,
    AccountRateLimits,
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
from chroma_orch.runtimes.batch import BatchLoader
from chroma_orch.runtimes.ecs.sizes import size_problem
from chroma_orch.runtimes.ecs.throttle import LocalRateLimits
from chroma_orch.runtimes.heartbeat import heartbeats
from chroma_orch.runtimes.server_settings import settings_problems
from chroma_orch.runtimes.sim.api import CloudApi
from chroma_orch.runtimes.sim.local import LocalCloud
from chroma_orch.runtimes.sim.settings import SimRuntimeSettings
from chroma_orch.runtimes.sim.wire import ServerRef

_DESCRIBE_BATCH = 100
"""Servers per simulated DescribeTasks call (ECS's limit)."""
_POLL_BATCH = 50 * _DESCRIBE_BATCH
"""Servers per coalesced poll: 50 calls of the describe budget at most (its burst is 100)."""
_FOLLOW_INTERVAL = 0.05
ENFORCEMENT = {"cpu": "not enforced (simulated)", "memory": "not enforced (simulated)"}


class SimRuntime:
    """Handle data: ``instance_id``, ``serial`` (which server of the instance), ``port``.

    The cloud is in this process (``LocalCloud``) unless ``settings.cloud_url`` names
    a shared one (``RemoteCloud``, docs/sim-runtime.md)."""

    name = "sim"
    allocates_ports = True

    def __init__(
        self,
        settings: SimRuntimeSettings,
        rate_limits: AccountRateLimits | None = None,
        cloud: CloudApi | None = None,
    ) -> None:
        self.settings = settings
        self.cloud: CloudApi = cloud or _cloud(settings)
        self.rate_limits: AccountRateLimits = rate_limits or LocalRateLimits()
        self.start_timeout = settings.start_timeout
        self.wake_timeout = settings.wake_timeout
        self.visibility_grace = settings.visibility_lag * settings.time_scale
        self.launch_budget = settings.launch_budget
        self._describe = BatchLoader(self._observe_servers, max_batch=_POLL_BATCH)
        self._follow = BatchLoader(self._observe, max_batch=_POLL_BATCH)

    async def _call(self, category: str, n: int = 1) -> None:
        """One simulated API call of ``category``: within its rate budget."""
        burst, rate = self.settings.api_limits[category]
        await self.rate_limits.acquire(f"sim:{category}", burst, rate, n)

    async def start(self, spec: InstanceSpec) -> Handle:
        _check_id(spec.instance_id)
        await self._call("run")
        check_launch_by(spec)
        return _handle(await self.cloud.start(spec), spec.generation)

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
        as often as a tenth of the simulated median start, at least every 10 ms).

        The checks of every start in flight go to the cloud together, one request per
        round. Sent one by one, 100 starts checked every 40 ms (``time_scale`` 0.01)
        were 2,500 requests a second to the cloud: a fifth of a replica's CPU at
        10,000 instances. They are not charged to the describe budget: the compressed
        clock checks a start as much more often as it shortens it, and the budget, in
        real seconds (``settings.py``), does not scale with it; charged, they starved
        the liveness pass (crash-to-noticed p50 0.1 s -> 0.5 s)."""
        deadline = time.monotonic() + timeout
        scaled_median = self.settings.start_median * self.settings.time_scale
        tick = max(0.01, min(1.0, scaled_median / 10))
        key = _key(handle)
        while True:
            observation: Observation = (await self._follow.load([key]))[key]
            if observation.state is not ObservedState.STARTING or time.monotonic() >= deadline:
                return observation
            await asyncio.sleep(min(tick, max(0.0, deadline - time.monotonic())))

    async def poll(self, handles: Mapping[str, Handle]) -> dict[str, Observation]:
        """Polls of concurrent callers (each reconcile's of its one server, the
        liveness pass's of thousands) are coalesced, as the ECS runtime coalesces its
        DescribeTasks: a call per 100 servers of the budget, not one per caller."""
        if not handles:
            return {}
        keys = {name: _key(handle) for name, handle in handles.items()}
        found = await self._describe.load(keys.values())
        return {name: found[key] for name, key in keys.items()}

    def polls_per_second(self) -> float:
        """The describe budget's refill: calls per second of 100 servers each."""
        return self.settings.api_limits["describe"][1] * _DESCRIBE_BATCH

    async def _observe_servers(self, keys: list[str]) -> dict[str, Observation]:
        """One coalesced poll: its simulated DescribeTasks calls, one observe."""
        await self._call("describe", math.ceil(len(keys) / _DESCRIBE_BATCH))
        return await self._observe(keys)

    async def _observe(self, keys: list[str]) -> dict[str, Observation]:
        """The cloud's observations of ``keys``, not charged to the budget: alone, one
        round of ``wait_ready``'s checks."""
        servers = [_parse_key(key) for key in keys]
        return dict(zip(keys, await self.cloud.observe(servers), strict=True))

    async def heartbeat(self, servers: Mapping[str, Endpoint], timeout: float) -> dict[str, bool]:
        """Asks each responder over HTTP, as the data plane reaches it."""
        return await heartbeats(servers, timeout)

    async def stop(self, handle: Handle) -> None:
        await self._call("stop")
        await self.cloud.stop(*_server(handle))

    async def delete(self, instance_id: str, handle: Handle | None, keep_data: bool) -> None:
        _check_id(instance_id)
        await self._call("stop")
        await self.cloud.delete(instance_id, keep_data)

    async def logs(self, instance_id: str, handle: Handle | None, tail: int) -> list[str]:
        return (await self.cloud.logs(instance_id))[-tail:] if tail > 0 else []

    async def follow_logs(
        self, instance_id: str, handle: Handle | None, tail: int
    ) -> AsyncIterator[list[str]]:
        """Ends once the handle's server is gone (output is per server, as on ECS)."""
        lines = await self.cloud.logs(instance_id)
        sent = len(lines)
        yield lines[-tail:] if tail > 0 else []
        while True:
            lines = await self.cloud.logs(instance_id)
            if len(lines) > sent:
                yield lines[sent:]
                sent = len(lines)
            if handle is None or not (await self.cloud.observe([_server(handle)]))[0].live:
                return
            await asyncio.sleep(_FOLLOW_INTERVAL)

    async def discover(self) -> dict[str, Handle]:
        """The live servers, except those started within ``visibility_grace``."""
        await self._call("describe")
        return {server.instance_id: _handle(server, None) for server in await self.cloud.discover()}

    def on_exit(self, callback: ExitCallback) -> None:
        self.cloud.watch_exits(callback)

    async def aclose(self) -> None:
        await self._describe.aclose()
        await self._follow.aclose()
        await self.cloud.aclose()


def _cloud(settings: SimRuntimeSettings) -> CloudApi:
    if settings.cloud_url:
        from chroma_orch.runtimes.sim.remote import RemoteCloud

        return RemoteCloud(settings.cloud_url)
    return LocalCloud(settings)


def _server(handle: Handle) -> tuple[str, int]:
    serial = handle.data.get("serial")
    return str(handle.data.get("instance_id")), serial if isinstance(serial, int) else -1


def _key(handle: Handle) -> str:
    instance_id, serial = _server(handle)
    return f"{instance_id}/{serial}"


def _parse_key(key: str) -> tuple[str, int]:
    instance_id, _, serial = key.rpartition("/")
    return instance_id, int(serial)


def _handle(server: ServerRef, generation: int | None) -> Handle:
    return Handle(generation, server.to_json())


def _check_id(instance_id: str) -> None:
    if not INSTANCE_ID.fullmatch(instance_id):
        raise ValueError(f"invalid instance id {instance_id!r}")
