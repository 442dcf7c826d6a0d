"""The driver contract every runtime implements (JupyterHub's Spawner is the model).

A runtime turns an instance spec into a running Chroma server and reports on it.
It keeps no state of its own that matters: everything needed to find a server
again lives in the JSON ``handle`` the reconciler stores on the instance row, so
a restarted service re-attaches instead of launching twice.

Edge cases every driver must honour:

- ``poll`` of a handle whose server is gone answers ``ObservedState.EXITED`` (with the
  exit detail when known); it never raises for "not found".
- ``stop`` of something already gone is a no-op; ``delete`` of something never
  started is a no-op.
- ``start`` for an instance whose server is already running (the service crashed
  between start and saving the handle) returns a handle to *that* server instead
  of starting a second one.
- Transient failures raise ``RuntimeUnavailableError``; the reconciler retries
  with backoff. ``StartFailedError`` means this attempt is over and counts
  against the restart budget.
"""

from __future__ import annotations

import enum
import re
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

INSTANCE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")
"""What a runtime accepts as an instance id (the reconciler passes UUIDs). No dots
or slashes: ids become file names and tags; "<id>.lock" never names another's data."""

Handle = dict[str, Any]
"""JSON-serialisable driver state stored on the instance row."""


class ObservedState(enum.StrEnum):
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    EXITED = "exited"


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


@dataclass(frozen=True)
class Observation:
    state: ObservedState
    endpoint: Endpoint | None = None
    reason: str | None = None
    """Machine-readable cause when the server exited (e.g. ``ProcessExited``)."""
    message: str | None = None
    """Human explanation: exit code, last log lines."""


@dataclass(frozen=True)
class InstanceSpec:
    """What the reconciler asks a runtime to run."""

    instance_id: str
    tenant_id: str
    name: str
    generation: int
    port: int | None = None
    """A fixed port for the server (tests); else a runtime that chooses ports reserves
    one itself (the local runtime, through its ``PortReservations``)."""
    options: Mapping[str, Any] = field(default_factory=dict)
    start_token: str = ""
    """Unique per start attempt (instance, generation, restart): an idempotency
    token for runtimes whose start call accepts one (ECS ``clientToken``)."""


class StartFailedError(Exception):
    """This start attempt failed for a reason the instance should show."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message


class RuntimeUnavailableError(Exception):
    """The runtime could not be reached or refused for now; retry later."""


ExitCallback = Callable[[str], None]
"""Called with the instance id when a runtime notices a server exit by itself."""


class Runtime(Protocol):
    name: str
    allocates_ports: bool
    """True when the runtime chooses its servers' addresses (ports) and keeps them out
    of reuse for the address quarantine itself; False when a stopped server's address
    may go to the next one at once (ECS), so the reconciler drains before a stop."""
    start_timeout: float
    """Seconds a server may take from start to running before the start fails."""

    async def start(self, spec: InstanceSpec) -> Handle:
        """Start (or adopt an already running) server; return once it is launched.

        Readiness is not awaited here: ``wait_ready`` and ``poll`` report it.
        """

    async def wait_ready(self, handle: Handle, timeout: float) -> Observation:
        """Wait until the server answers, it exits, or ``timeout`` passes.

        Returns the last observation (``RUNNING``, ``EXITED`` or ``STARTING`` on timeout).
        A runtime whose servers take long to start (ECS) may answer ``STARTING`` at
        once; the reconciler's batched liveness pass follows the start from there.
        """

    async def poll(self, handles: Mapping[str, Handle]) -> dict[str, Observation]:
        """Observe many servers at once, keyed as ``handles`` is (instance id)."""

    async def stop(self, handle: Handle) -> None:
        """Stop the server; idempotent. May return before it is gone (``poll``
        then reports ``STOPPING`` until ``EXITED``)."""

    async def delete(self, instance_id: str, handle: Handle | None, keep_data: bool) -> None:
        """Release everything the instance holds (data unless ``keep_data``); idempotent."""

    async def logs(self, instance_id: str, handle: Handle | None, tail: int) -> list[str]:
        """The last ``tail`` lines of the server's output."""

    def follow_logs(
        self, instance_id: str, handle: Handle | None, tail: int
    ) -> AsyncIterator[list[str]]:
        """The last ``tail`` lines, then new lines as the server writes them (batches);
        ends when the server is gone for good. Cancel to stop following."""

    async def discover(self) -> dict[str, Handle]:
        """Servers this runtime can find by itself, keyed by instance id.

        Used after a restart to adopt servers whose handle was never saved and to
        stop orphans whose instance is unknown or deleted.
        """

    def on_exit(self, callback: ExitCallback) -> None:
        """Register a callback for exits the runtime notices without being polled."""

    async def aclose(self) -> None:
        """Release driver resources (not the servers)."""
