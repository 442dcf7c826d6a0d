"""The start phases of an ECS task, read from DescribeTasks.

ECS moves a task through ``PROVISIONING`` (its network interface is attached),
``PENDING`` (the agent pulls the image and starts the containers), ``ACTIVATING``
and ``RUNNING`` (developer guide, "Amazon ECS task lifecycle":
https://docs.aws.amazon.com/AmazonECS/latest/developerguide/task-lifecycle-explanation.html),
and stamps the task with when it got there (API reference, ``Task``: ``createdAt``,
``connectivityAt``, ``pullStartedAt``, ``pullStoppedAt``, ``startedAt``). The
heartbeat phase comes on top, from ``HeartbeatGate``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from chroma_orch.runtimes.base import StartPhase

TIMESTAMPS = {
    StartPhase.PROVISIONING: "createdAt",
    StartPhase.PENDING: "connectivityAt",
    StartPhase.PULLING: "pullStartedAt",
    StartPhase.PULLED: "pullStoppedAt",
    StartPhase.RUNNING: "startedAt",
}
"""The task field that says when each phase was reached."""
_BY_STATUS = {
    "PROVISIONING": StartPhase.PROVISIONING,
    "PENDING": StartPhase.PENDING,
    "ACTIVATING": StartPhase.PENDING,
    "RUNNING": StartPhase.RUNNING,
}


def _time(value: Any) -> datetime | None:
    """A task timestamp (botocore parses them to datetimes) as an aware datetime."""
    if isinstance(value, datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    if isinstance(value, int | float):
        return datetime.fromtimestamp(float(value), UTC)
    return None


def phase_times(task: Mapping[str, Any]) -> dict[StartPhase, datetime]:
    """When the task reached each start phase, as far as its timestamps tell."""
    times = {phase: _time(task.get(name)) for phase, name in TIMESTAMPS.items()}
    return {phase: at for phase, at in times.items() if at is not None}


def start_phase(task: Mapping[str, Any]) -> StartPhase | None:
    """The furthest start phase of a task that is not stopping: its ``lastStatus``,
    or the furthest phase its timestamps prove (an image pull under way or done)."""
    status = _BY_STATUS.get(str(task.get("lastStatus") or "PROVISIONING"))
    if status is None:
        return None
    reached = [status, *phase_times(task)]
    return max(reached, key=lambda phase: phase.rank)
