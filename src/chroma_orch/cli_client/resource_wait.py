"""Waiting for a resource the service carries out in the background (a snapshot, an
upgrade, a rollout) to reach an end: the event stream when the service offers it
(every event about the resource's instance, or every event for a rollout, re-reads
it), else polls of its ``GET`` path. Each new progress line is reported once."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from chroma_orch.cli_client import streams
from chroma_orch.cli_client.api import Api
from chroma_orch.cli_client.exits import FAILED, CliError
from chroma_orch.cli_client.follow import Progress

Resource = dict[str, Any]


@dataclass
class Waiter:
    """Progress lines and the deadline of one ``--wait``."""

    what: str
    """What is awaited, for the timeout's message ("the snapshot")."""
    timeout: float
    progress: Progress
    line: Callable[[Resource], str]
    """The progress line a state of the resource shows."""
    ended: Callable[[Resource], bool]
    """Whether the wait is over (it may raise ``CliError`` to end it in failure)."""
    deadline: float = field(init=False)
    seen: str = ""
    last: Resource = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.deadline = time.monotonic() + self.timeout

    def settled(self, resource: Resource) -> bool:
        self.last = resource
        line = self.line(resource)
        if line != self.seen:
            self.progress(line)
            self.seen = line
        return self.ended(resource)

    def remaining(self) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            message = f"timed out after {self.timeout:g}s waiting for {self.what} ({self.seen})"
            raise CliError(FAILED, message, self.last)
        return left


def wait_for(
    api: Api,
    resource: Resource,
    path: str,
    instance_id: str | None,
    waiter: Waiter,
    poll_seconds: float,
) -> Resource:
    """``resource`` (read at ``path``) once ``waiter`` says it has ended; events of
    ``instance_id`` (None: every event) wake the reads. ``CliError(FAILED)`` once the
    waiter's timeout passed first."""
    if waiter.settled(resource):
        return resource
    done = streams.watch(api, instance_id, lambda: api.get(path), waiter.settled, waiter.remaining)
    if done is not None:
        return done
    current = waiter.last
    while not waiter.settled(current):
        time.sleep(min(poll_seconds, waiter.remaining()))
        current = api.get(path)
    return current
