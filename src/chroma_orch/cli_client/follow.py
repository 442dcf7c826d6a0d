"""Waiting for an instance to reach a phase, and following its logs.

Both prefer the service's WebSockets (``streams``). Without them, waiting uses
the long poll ``GET /v1/instances/{id}/wait`` (the service answers as soon as the
instance is in the phase for its current generation or failed, else after
``POLL_SECONDS``), and following logs polls ``GET /v1/instances/{id}/logs``.
Every new phase seen is reported as progress; waiting for "running", so is every
start phase (provisioning, pulling, ..., ``start_phases``) with the seconds from
the request to reaching it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from chroma_orch.cli_client import streams
from chroma_orch.cli_client.api import Api
from chroma_orch.cli_client.exits import FAILED, NOT_FOUND, CliError

POLL_SECONDS = 2.0
"""Longest single long poll: how stale a progress line may be."""
LOG_POLL_SECONDS = 1.0
LOG_WINDOW = 1000

Progress = Callable[[str], None]


class _Waiter:
    """Progress lines, the target, failure and the deadline of one ``--wait``."""

    def __init__(self, phase: str, timeout: float, progress: Progress) -> None:
        self.phase, self.timeout, self.progress = phase, timeout, progress
        self.deadline = time.monotonic() + timeout
        self.seen = ""
        self.last: dict[str, Any] = {}
        self.since: datetime | None = None
        self.start_seen: set[tuple[str, str]] = set()

    def settled(self, instance: dict[str, Any]) -> bool:
        self.last = instance
        if self.phase == "running":
            self._start_phases(instance)
        current = _settled_phase(instance)
        if current != self.seen:
            self.progress(current)
            self.seen = current
        if current == "failed":
            raise CliError(FAILED, _failure_text(instance), instance)
        return current == self.phase

    def _start_phases(self, instance: dict[str, Any]) -> None:
        """Report the start phases this request's start reached that are new, each
        with the seconds from the request (the instance's ``updated_at`` as the
        request answered: the service's clock, as the phases' times are)."""
        if self.since is None:
            self.since = _time(instance.get("updated_at"))
        for phase, at in (instance.get("start_phases") or {}).items():
            reached = _time(at)
            if (phase, at) in self.start_seen or reached is None or self.since is None:
                continue
            if reached < self.since:
                continue  # an earlier start's
            self.start_seen.add((phase, at))
            seconds = (reached - self.since).total_seconds()
            self.progress(f"start phase {phase} at +{seconds:.1f}s")

    def remaining(self) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            message = f"timed out after {self.timeout:g}s waiting for {self.phase} ({self.seen})"
            raise CliError(FAILED, message, self.last)
        return left


def wait_for_phase(
    api: Api, instance: dict[str, Any], phase: str, timeout: float, progress: Progress
) -> dict[str, Any]:
    """The instance once it is in ``phase`` (for its current generation), followed
    on the event stream when the service has one, else by long polls.

    Raises ``CliError(FAILED)`` when it failed or ``timeout`` seconds passed."""
    waiter = _Waiter(phase, timeout, progress)
    if waiter.settled(instance):
        return instance
    done = streams.wait(api, str(instance["id"]), waiter.settled, waiter.remaining)
    if done is not None:
        return done
    instance = waiter.last
    while not waiter.settled(instance):
        poll = min(POLL_SECONDS, waiter.remaining())
        instance = api.get(
            f"/v1/instances/{instance['id']}/wait",
            params={"phase": phase, "timeout": round(poll, 3)},
            timeout=poll + 30,
        )
    return instance


def _settled_phase(instance: dict[str, Any]) -> str:
    """The phase, or 'pending'-like progress while the reconciler has not caught up."""
    phase = str(instance["phase"])
    if instance.get("observed_generation") == instance.get("generation"):
        return phase
    return f"{phase} (working on it)" if phase in ("running", "stopped", "failed") else phase


def _time(value: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(str(value)) if value else None
    except ValueError:
        return None


def _failure_text(instance: dict[str, Any]) -> str:
    fail = instance.get("failure") or {}
    reason = fail.get("reason") or "unknown"
    message = fail.get("message") or "no message"
    return f"instance {instance['name']} ({instance['id']}) failed: {reason}: {message}"


def wait_until_gone(api: Api, instance_id: str, timeout: float, progress: Progress) -> None:
    """Return once the instance no longer exists (a delete finished)."""
    deadline = time.monotonic() + timeout
    seen = ""
    while time.monotonic() < deadline:
        try:
            instance = api.get(f"/v1/instances/{instance_id}")
        except CliError as exc:
            if exc.code == NOT_FOUND:
                return
            raise
        if instance["phase"] != seen:
            seen = instance["phase"]
            progress(seen)
        time.sleep(0.25)
    raise CliError(FAILED, f"timed out after {timeout:g}s waiting for the delete")


def new_lines(previous: Sequence[str], current: Sequence[str]) -> list[str]:
    """Lines of ``current`` (a tail window) that come after ``previous`` (an earlier one).

    Aligns the end of ``previous`` with the latest place in ``current`` where all of
    it (or all that fits) matches; with no match, everything in ``current`` is new."""
    prev, cur = list(previous), list(current)
    if not prev:
        return cur
    for end in range(len(cur), 0, -1):
        overlap = min(end, len(prev))
        if cur[end - overlap : end] == prev[len(prev) - overlap :]:
            return cur[end:]
    return cur


def follow_logs(api: Api, instance_id: str, first: Sequence[str], emit: Progress) -> None:
    """Print new log lines until the instance is deleted (or Ctrl-C)."""
    window = list(first)
    while True:
        time.sleep(LOG_POLL_SECONDS)
        try:
            body = api.get(f"/v1/instances/{instance_id}/logs", params={"tail": LOG_WINDOW})
        except CliError as exc:
            if exc.code == NOT_FOUND:
                return
            raise
        lines: list[str] = body["lines"]
        for line in new_lines(window, lines):
            emit(line)
        window = lines
