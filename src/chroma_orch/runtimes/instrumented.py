"""A runtime wrapper that counts calls and failures per operation (Prometheus)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Mapping
from typing import TypeVar

from chroma_orch.runtimes.base import (
    Endpoint,
    ExitCallback,
    Handle,
    InstanceSpec,
    Observation,
    Runtime,
    RuntimeUnavailableError,
    StartFailedError,
)
from chroma_orch.telemetry.metrics import RUNTIME_CALLS, RUNTIME_ERRORS

T = TypeVar("T")


class InstrumentedRuntime:
    def __init__(self, inner: Runtime) -> None:
        self.inner = inner
        self.name = inner.name
        self.allocates_ports = inner.allocates_ports
        self.start_timeout = inner.start_timeout
        self.wake_timeout = inner.wake_timeout
        self.visibility_grace = inner.visibility_grace
        self.launch_budget = inner.launch_budget

    async def _call(self, operation: str, call: Awaitable[T]) -> T:
        RUNTIME_CALLS.labels(self.name, operation).inc()
        try:
            return await call
        except RuntimeUnavailableError:
            RUNTIME_ERRORS.labels(self.name, operation, "unavailable").inc()
            raise
        except StartFailedError:
            RUNTIME_ERRORS.labels(self.name, operation, "start_failed").inc()
            raise
        except Exception:
            RUNTIME_ERRORS.labels(self.name, operation, "error").inc()
            raise

    async def start(self, spec: InstanceSpec) -> Handle:
        return await self._call("start", self.inner.start(spec))

    async def wait_ready(self, handle: Handle, timeout: float) -> Observation:
        return await self._call("wait_ready", self.inner.wait_ready(handle, timeout))

    async def poll(self, handles: Mapping[str, Handle]) -> dict[str, Observation]:
        return await self._call("poll", self.inner.poll(handles))

    async def heartbeat(self, servers: Mapping[str, Endpoint], timeout: float) -> dict[str, bool]:
        return await self._call("heartbeat", self.inner.heartbeat(servers, timeout))

    async def stop(self, handle: Handle) -> None:
        await self._call("stop", self.inner.stop(handle))

    async def delete(self, instance_id: str, handle: Handle | None, keep_data: bool) -> None:
        await self._call("delete", self.inner.delete(instance_id, handle, keep_data))

    async def logs(self, instance_id: str, handle: Handle | None, tail: int) -> list[str]:
        return await self._call("logs", self.inner.logs(instance_id, handle, tail))

    def follow_logs(
        self, instance_id: str, handle: Handle | None, tail: int
    ) -> AsyncIterator[list[str]]:
        RUNTIME_CALLS.labels(self.name, "follow_logs").inc()
        return self.inner.follow_logs(instance_id, handle, tail)

    async def discover(self) -> dict[str, Handle]:
        return await self._call("discover", self.inner.discover())

    def on_exit(self, callback: ExitCallback) -> None:
        self.inner.on_exit(callback)

    async def aclose(self) -> None:
        await self.inner.aclose()
