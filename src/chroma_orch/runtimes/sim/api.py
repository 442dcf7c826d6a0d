"""What the ``sim`` runtime asks of its simulated cloud (``CloudApi``), in one process
(``local.LocalCloud``, the default) or in a process of its own shared by several
service replicas (``remote.RemoteCloud`` talking to ``cloud_server``).

The runtime keeps the API rate limits (shared by replicas through the database) and
the contract's loops (``wait_ready``, ``follow_logs``); the cloud keeps the servers,
their fates, their responders and the simulated clock. Every method raises
``RuntimeUnavailableError`` when the cloud cannot be reached.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from chroma_orch.runtimes.base import ExitCallback, ExitCause, InstanceSpec, Observation
from chroma_orch.runtimes.sim.wire import ServerRef


class CloudApi(Protocol):
    async def start(self, spec: InstanceSpec) -> ServerRef:
        """The instance's live server (adopted: never two), else a new one; raises
        ``StartFailedError`` when the start's fate is to fail at once."""

    async def observe(self, servers: Sequence[tuple[str, int]]) -> list[Observation]:
        """What each ``(instance_id, serial)`` server is doing now (EXITED once gone or
        replaced), in order."""

    async def stop(self, instance_id: str, serial: int) -> None:
        """Stop that server (STOPPING for ``stop_after``, then gone); a no-op when gone."""

    async def delete(self, instance_id: str, keep_data: bool) -> None:
        """Remove the instance's server, and its output unless ``keep_data``."""

    async def logs(self, instance_id: str) -> list[str]:
        """The instance's output lines (the last ``LOG_LINES``)."""

    async def discover(self) -> list[ServerRef]:
        """The live servers, except those started within the visibility lag."""

    async def crash(self, instance_id: str, cause: ExitCause = ExitCause.CRASH) -> None:
        """Make the instance's server exit by itself now (tests, benchmarks)."""

    async def say(self, instance_id: str, line: str) -> None:
        """Add a line to the instance's output (tests)."""

    def watch_exits(self, callback: ExitCallback) -> None:
        """Call ``callback`` with the instance id of every server that exits from now
        on, whoever started or stopped it."""

    async def aclose(self) -> None:
        """Stop watching exits and let go of connections (the servers stay)."""
