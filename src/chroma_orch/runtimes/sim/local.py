"""The simulated cloud in the runtime's own process (``CloudApi``): the default, and
what ``cloud_server`` serves to other processes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from datetime import timedelta

from chroma_orch.runtimes.base import (
    Endpoint,
    ExitCallback,
    ExitCause,
    InstanceSpec,
    Observation,
    ObservedState,
    StartFailedError,
    StartPhase,
)
from chroma_orch.runtimes.sim.cloud import Cloud, SimServer, cloud
from chroma_orch.runtimes.sim.launch import launch
from chroma_orch.runtimes.sim.settings import SimRuntimeSettings
from chroma_orch.runtimes.sim.wire import ServerRef

_START_FAILURES = {
    ExitCause.CAPACITY: ("CapacityUnavailable", "no Fargate capacity is available (simulated)"),
    ExitCause.CRASH: ("CannotStartContainerError", "the container failed to start (simulated)"),
}


class LocalCloud:
    """Operations on the process's cloud named ``settings.cluster`` (``cloud.cloud``):
    every LocalCloud of one name shares its servers."""

    def __init__(self, settings: SimRuntimeSettings) -> None:
        self.settings = settings
        self.state: Cloud = cloud(settings)
        self._callbacks: list[ExitCallback] = []

    async def start(self, spec: InstanceSpec) -> ServerRef:
        self.state.reach()
        current = self.state.servers.get(spec.instance_id)
        if current is not None and not current.exited:
            return _ref(current)  # adopt: never two servers
        fate = self.state.draws.fate()
        if fate.failure is not None:
            reason, message = _START_FAILURES[fate.failure]
            self.state.say(spec.instance_id, f"start failed: {reason}: {message}")
            raise StartFailedError(reason, message, fate.failure)
        return _ref(await launch(self.state, spec, fate))

    async def observe(self, servers: Sequence[tuple[str, int]]) -> list[Observation]:
        self.state.reach()
        return [self._observe(instance_id, serial) for instance_id, serial in servers]

    async def stop(self, instance_id: str, serial: int) -> None:
        self.state.reach()
        server = self._live(instance_id, serial)
        if server is None or server.stopping_until is not None:
            return
        server.listener.close()  # a stopping server no longer answers
        grace = self.state.scaled(self.settings.stop_after)
        server.stopping_until = time.monotonic() + grace
        loop = asyncio.get_running_loop()
        server.timers.append(loop.call_later(grace, self._stopped, server))

    def _stopped(self, server: SimServer) -> None:
        self.state.exit(server, "Stopped", "stopped", ExitCause.CRASH)

    async def delete(self, instance_id: str, keep_data: bool) -> None:
        self.state.reach()
        server = self.state.servers.pop(instance_id, None)
        if server is not None:
            self.state.exit(server, "Stopped", "deleted", ExitCause.CRASH)
        if not keep_data:
            self.state.logs.pop(instance_id, None)

    async def logs(self, instance_id: str) -> list[str]:
        self.state.reach()
        return list(self.state.logs.get(instance_id, ()))

    async def discover(self) -> list[ServerRef]:
        self.state.reach()
        seen_before = time.monotonic() - self.state.scaled(self.settings.visibility_lag)
        return [
            _ref(server)
            for server in self.state.servers.values()
            if not server.exited and server.started <= seen_before
        ]

    async def crash(self, instance_id: str, cause: ExitCause = ExitCause.CRASH) -> None:
        server = self.state.servers.get(instance_id)
        if server is not None:
            self.state.fail(server, cause)

    async def say(self, instance_id: str, line: str) -> None:
        self.state.say(instance_id, line)

    def watch_exits(self, callback: ExitCallback) -> None:
        self._callbacks.append(callback)
        self.state.exit_callbacks.append(callback)

    async def aclose(self) -> None:
        for callback in self._callbacks:
            self.state.exit_callbacks.remove(callback)
        self._callbacks.clear()

    def _live(self, instance_id: str, serial: int) -> SimServer | None:
        """The live server named (None once it exited or was replaced)."""
        server = self.state.servers.get(instance_id)
        if server is None or server.serial != serial or server.exited:
            return None
        return server

    def _observe(self, instance_id: str, serial: int) -> Observation:
        server = self.state.servers.get(instance_id)
        if server is None or server.serial != serial:
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
        """A live server's start phase by now (RUNNING once its responder answers).

        A responder answering has passed every phase, whatever the clock says: the
        loop's timer that starts it may fire a little early (asyncio by its clock's
        resolution, uvloop by rounding to milliseconds), and a compressed clock
        (``time_scale``) makes that a visible part of the last phase."""
        elapsed = (time.monotonic() - server.started) / self.settings.time_scale
        serving = server.listener.serving
        reached = [
            (phase, at)
            for phase, at in server.fate.phases
            if serving or (at <= elapsed and phase is not StartPhase.HEARTBEAT_ANSWERED)
        ]
        times = {
            phase: server.started_at + timedelta(seconds=self.state.scaled(at))
            for phase, at in reached
        }
        phase = reached[-1][0] if reached else None
        if serving:
            endpoint = Endpoint(self.settings.host, server.port)
            return Observation(ObservedState.RUNNING, endpoint, phase=phase, phase_times=times)
        return Observation(ObservedState.STARTING, phase=phase, phase_times=times)


def _ref(server: SimServer) -> ServerRef:
    return ServerRef(server.instance_id, server.serial, server.port)
