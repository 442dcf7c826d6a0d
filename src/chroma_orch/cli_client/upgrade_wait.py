"""Waiting for a guarded upgrade to end: its instance's event stream when the
service offers it (every event about the instance re-reads the upgrade), else
polls of ``GET /v1/instances/{id}/upgrades/{upgrade_id}``."""

from __future__ import annotations

import time
from typing import Any

from chroma_orch.cli_client import streams
from chroma_orch.cli_client.api import Api
from chroma_orch.cli_client.exits import FAILED, CliError
from chroma_orch.cli_client.follow import Progress
from chroma_orch.cli_client.upgrade_render import ENDED, progress_line

POLL_SECONDS = 1.0
"""Between two reads of the upgrade when there is no event stream."""


class _Waiter:
    """Progress lines and the deadline of one ``instances upgrade --wait``."""

    def __init__(self, timeout: float, progress: Progress) -> None:
        self.timeout, self.progress = timeout, progress
        self.deadline = time.monotonic() + timeout
        self.seen = ""
        self.last: dict[str, Any] = {}

    def settled(self, upgrade: dict[str, Any]) -> bool:
        self.last = upgrade
        line = progress_line(upgrade)
        if line != self.seen:
            self.progress(line)
            self.seen = line
        return upgrade["phase"] in ENDED

    def remaining(self) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            message = f"timed out after {self.timeout:g}s waiting for the upgrade ({self.seen})"
            raise CliError(FAILED, message, self.last)
        return left


def wait_until_ended(
    api: Api, upgrade: dict[str, Any], timeout: float, progress: Progress
) -> dict[str, Any]:
    """The upgrade once it has ended (succeeded, rolled back or cancelled); raises
    ``CliError(FAILED)`` when ``timeout`` seconds passed first."""
    waiter = _Waiter(timeout, progress)
    if waiter.settled(upgrade):
        return upgrade
    path = f"/v1/instances/{upgrade['instance_id']}/upgrades/{upgrade['id']}"
    done = streams.watch(
        api, str(upgrade["instance_id"]), lambda: api.get(path), waiter.settled, waiter.remaining
    )
    if done is not None:
        return done
    current = waiter.last
    while not waiter.settled(current):
        time.sleep(min(POLL_SECONDS, waiter.remaining()))
        current = api.get(path)
    return current
