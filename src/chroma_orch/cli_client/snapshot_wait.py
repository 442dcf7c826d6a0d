"""Waiting for a snapshot to be ready: its instance's event stream when the
service offers it (every event about the instance re-reads the snapshot), else
polls of ``GET /v1/snapshots/{id}``. A failed snapshot ends the wait with exit 1."""

from __future__ import annotations

from typing import Any

from chroma_orch.cli_client.api import Api
from chroma_orch.cli_client.exits import FAILED, CliError
from chroma_orch.cli_client.follow import Progress
from chroma_orch.cli_client.resource_wait import Waiter, wait_for

POLL_SECONDS = 0.5
"""Between two reads of the snapshot when there is no event stream."""


def failure_text(snapshot: dict[str, Any]) -> str:
    fail = snapshot.get("failure") or {}
    reason = fail.get("reason") or "unknown"
    message = fail.get("message") or "no message"
    return f"snapshot {snapshot['id']} failed: {reason}: {message}"


def _ready(snapshot: dict[str, Any]) -> bool:
    if snapshot["phase"] == "failed":
        raise CliError(FAILED, failure_text(snapshot), snapshot)
    return bool(snapshot["phase"] == "ready")


def _phase(snapshot: dict[str, Any]) -> str:
    return str(snapshot["phase"])


def wait_until_ready(
    api: Api, snapshot: dict[str, Any], timeout: float, progress: Progress
) -> dict[str, Any]:
    """The snapshot once ready; raises ``CliError(FAILED)`` when it failed or
    ``timeout`` seconds passed."""
    waiter = Waiter("the snapshot", timeout, progress, _phase, _ready)
    path = f"/v1/snapshots/{snapshot['id']}"
    return wait_for(api, snapshot, path, str(snapshot["instance_id"]), waiter, POLL_SECONDS)
