"""Waiting for a snapshot to be ready: its instance's event stream when the
service offers it (every event about the instance re-reads the snapshot), else
polls of ``GET /v1/snapshots/{id}``. A failed snapshot ends the wait with exit 1."""

from __future__ import annotations

import time
from typing import Any

from chroma_orch.cli_client import streams
from chroma_orch.cli_client.api import Api
from chroma_orch.cli_client.exits import FAILED, CliError
from chroma_orch.cli_client.follow import Progress

POLL_SECONDS = 0.5
"""Between two reads of the snapshot when there is no event stream."""


def failure_text(snapshot: dict[str, Any]) -> str:
    fail = snapshot.get("failure") or {}
    reason = fail.get("reason") or "unknown"
    message = fail.get("message") or "no message"
    return f"snapshot {snapshot['id']} failed: {reason}: {message}"


class _Waiter:
    """Progress lines, failure and the deadline of one ``snapshots create --wait``."""

    def __init__(self, timeout: float, progress: Progress) -> None:
        self.timeout, self.progress = timeout, progress
        self.deadline = time.monotonic() + timeout
        self.seen = ""
        self.last: dict[str, Any] = {}

    def settled(self, snapshot: dict[str, Any]) -> bool:
        self.last = snapshot
        phase = str(snapshot["phase"])
        if phase != self.seen:
            self.progress(phase)
            self.seen = phase
        if phase == "failed":
            raise CliError(FAILED, failure_text(snapshot), snapshot)
        return phase == "ready"

    def remaining(self) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            message = f"timed out after {self.timeout:g}s waiting for the snapshot ({self.seen})"
            raise CliError(FAILED, message, self.last)
        return left


def wait_until_ready(
    api: Api, snapshot: dict[str, Any], timeout: float, progress: Progress
) -> dict[str, Any]:
    """The snapshot once ready; raises ``CliError(FAILED)`` when it failed or
    ``timeout`` seconds passed."""
    waiter = _Waiter(timeout, progress)
    if waiter.settled(snapshot):
        return snapshot
    path = f"/v1/snapshots/{snapshot['id']}"
    done = streams.watch(
        api, str(snapshot["instance_id"]), lambda: api.get(path), waiter.settled, waiter.remaining
    )
    if done is not None:
        return done
    current = waiter.last
    while not waiter.settled(current):
        time.sleep(min(POLL_SECONDS, waiter.remaining()))
        current = api.get(path)
    return current
