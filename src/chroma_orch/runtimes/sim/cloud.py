"""The simulated cloud: its servers, their output and their ports, shared by name.

A module-level registry keyed by ``SimRuntimeSettings.cluster``: every runtime object
of one process with the same cluster name sees the same servers (a service restarted
in the process finds them with ``discover``). It lives in one process and event loop:
a new process starts with an empty cloud (docs/sim-runtime.md). Several processes share
one through ``cloud_server``, which holds it in its own process.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

from chroma_orch.runtimes.base import ExitCause, RuntimeUnavailableError, ServerSpec
from chroma_orch.runtimes.sim.model import Draws, Fate
from chroma_orch.runtimes.sim.responder import Listener
from chroma_orch.runtimes.sim.settings import SimRuntimeSettings

LOG_LINES = 1000
"""Output lines kept per instance."""


@dataclass
class SimServer:
    instance_id: str
    serial: int
    generation: int
    port: int
    fate: Fate
    spec: ServerSpec
    listener: Listener
    started: float = field(default_factory=time.monotonic)
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    stopping_until: float | None = None
    exited: bool = False
    exit_reason: str = ""
    exit_message: str = ""
    exit_cause: ExitCause = ExitCause.CRASH
    timers: list[asyncio.TimerHandle] = field(default_factory=list)


class Ports:
    """The responders' ports: in use, or left within the address quarantine (real
    seconds), handed out round-robin from the range."""

    def __init__(self, low: int, high: int, quarantine: float) -> None:
        self.low, self.high, self.quarantine = low, high, quarantine
        self.used: set[int] = set()
        self.left: dict[int, float] = {}
        self.cursor = low

    def candidates(self) -> Iterator[int]:
        """Every port that may be tried now, from the cursor on (lazily: a start takes
        the first few; a list of the 10,000 took 10 ms a start)."""
        now, size, start = time.monotonic(), self.high - self.low + 1, self.cursor - self.low
        for i in range(size):
            port = self.low + (start + i) % size
            if port not in self.used and self.left.get(port, 0.0) <= now:
                yield port

    def take(self, port: int) -> None:
        self.used.add(port)
        self.left.pop(port, None)
        if self.low <= port <= self.high:
            self.cursor = port + 1 if port < self.high else self.low

    def held_elsewhere(self, port: int) -> None:
        """Another process holds ``port``: not tried again within the quarantine, and
        the cursor moves past it."""
        self.left[port] = time.monotonic() + max(self.quarantine, 1.0)
        if self.low <= port <= self.high:
            self.cursor = port + 1 if port < self.high else self.low

    def release(self, port: int) -> None:
        self.used.discard(port)
        self.left[port] = time.monotonic() + self.quarantine


class Cloud:
    """Servers by instance (the latest of each), their output, the draws."""

    def __init__(self, settings: SimRuntimeSettings) -> None:
        self.settings = settings
        self.draws = Draws(settings)
        self.picks = random.Random(f"{settings.seed}:picks")  # noqa: S311 (a simulation)
        """Which servers ``crash_some`` crashes: seeded apart from the draws, so that
        the fates of the starts stay those of the seed whatever is crashed."""
        self.ports = Ports(*settings.ports, settings.address_quarantine)
        self.servers: dict[str, SimServer] = {}
        self.logs: dict[str, deque[str]] = {}
        self.serials = itertools.count(1)
        self.exit_callbacks: list[Callable[[str], None]] = []
        self.outage = False
        """While True every call that reaches the cloud raises RuntimeUnavailableError."""

    def reach(self) -> None:
        if self.outage:
            raise RuntimeUnavailableError("the simulated cloud is unreachable")

    def say(self, instance_id: str, line: str) -> None:
        self.logs.setdefault(instance_id, deque(maxlen=LOG_LINES)).append(line)

    def scaled(self, seconds: float) -> float:
        return seconds * self.settings.time_scale

    def exit(self, server: SimServer, reason: str, message: str, cause: ExitCause) -> None:
        """The server is gone: it stops answering, its port is quarantined, every
        runtime object on this cloud hears of it (``on_exit``)."""
        if server.exited:
            return
        server.listener.close()
        for timer in server.timers:
            timer.cancel()
        self.ports.release(server.port)
        server.exited, server.exit_reason, server.exit_message = True, reason, message
        server.exit_cause = cause
        self.say(server.instance_id, f"exited: {reason}: {message}")
        for callback in list(self.exit_callbacks):
            callback(server.instance_id)

    def crash(self, instance_id: str, cause: ExitCause = ExitCause.CRASH) -> None:
        """Make the instance's server exit by itself now (tests, benchmarks)."""
        self.fail(self.servers[instance_id], cause)

    def crash_some(self, count: int) -> list[tuple[str, float]]:
        """Crash up to ``count`` servers at random among those that run (started, past
        their drawn start latency, not stopping), as the crash rate would: each
        instance id with the CLOCK_MONOTONIC of its crash (benchmarks time what
        notices it)."""
        now = time.monotonic()
        running = [
            s
            for s in self.servers.values()
            if not s.exited and s.stopping_until is None and now - s.started > self.latency(s)
        ]
        crashed = []
        for server in self.picks.sample(running, min(count, len(running))):
            self.crash(server.instance_id)
            crashed.append((server.instance_id, time.monotonic()))
        return crashed

    def fates(self) -> list[tuple[str, int, float, float, bool]]:
        """What the simulation drew for each server (benchmarks compute the floor a
        burst of starts could reach): instance id, port, started (CLOCK_MONOTONIC),
        drawn start latency (real seconds), exited."""
        return [
            (s.instance_id, s.port, s.started, self.latency(s), s.exited)
            for s in self.servers.values()
        ]

    def latency(self, server: SimServer) -> float:
        """The real seconds the simulation drew for ``server``'s start."""
        return self.scaled(server.fate.latency)

    def fail(self, server: SimServer, cause: ExitCause) -> None:
        """``server`` exits by itself: a crash, or a retirement (INFRASTRUCTURE)."""
        reason = "TaskRetired" if cause is ExitCause.INFRASTRUCTURE else "EssentialContainerExited"
        self.exit(server, reason, _MESSAGES[cause], cause)


_MESSAGES = {
    ExitCause.CRASH: "the server crashed (simulated)",
    ExitCause.INFRASTRUCTURE: "the task was retired by the platform (simulated)",
    ExitCause.CAPACITY: "no capacity (simulated)",
}

_CLOUDS: dict[str, Cloud] = {}


def cloud(settings: SimRuntimeSettings) -> Cloud:
    """The cloud named ``settings.cluster``, made with ``settings`` on first use."""
    found = _CLOUDS.get(settings.cluster)
    if found is None:
        found = _CLOUDS[settings.cluster] = Cloud(settings)
    return found


def forget(name: str) -> None:
    """Drop the cloud named ``name`` (its servers must be gone; tests)."""
    _CLOUDS.pop(name, None)
