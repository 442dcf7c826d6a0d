"""The fake runtime's servers: in-process records, shared by name."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

from chroma_orch.runtimes.base import RuntimeUnavailableError, ServerSpec


@dataclass
class FakeServer:
    instance_id: str
    serial: int
    generation: int
    port: int
    ready_at: float
    alive: bool = True
    exit_reason: str = "ProcessExited"
    exit_message: str = "exit code 0"
    spec: ServerSpec = field(default_factory=ServerSpec)
    """The spec it was started on (``InstanceSpec.server``)."""


@dataclass
class World:
    """Servers by instance (the latest one of each), their output and their data."""

    servers: dict[str, FakeServer] = field(default_factory=dict)
    logs: dict[str, list[str]] = field(default_factory=dict)
    data: set[str] = field(default_factory=set)
    outage: bool = False
    """While True every call that would reach the "platform" raises RuntimeUnavailableError."""
    serials: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    exit_callbacks: list[Callable[[str], None]] = field(default_factory=list)

    def reach(self) -> None:
        if self.outage:
            raise RuntimeUnavailableError("the fake platform is unreachable")

    def say(self, instance_id: str, line: str) -> None:
        self.logs.setdefault(instance_id, []).append(line)

    def exit(self, server: FakeServer, reason: str, message: str) -> None:
        """The server ends; every runtime on this world hears of it (``on_exit``)."""
        if not server.alive:
            return
        server.alive, server.exit_reason, server.exit_message = False, reason, message
        self.say(server.instance_id, f"exited: {message}")
        for callback in list(self.exit_callbacks):
            callback(server.instance_id)

    def crash(self, instance_id: str, message: str = "exit code 1") -> None:
        """Make the instance's server die by itself (tests)."""
        self.exit(self.servers[instance_id], "ProcessExited", message)


_WORLDS: dict[str, World] = {}


def world(name: str) -> World:
    return _WORLDS.setdefault(name, World())
