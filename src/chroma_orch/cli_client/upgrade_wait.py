"""Waiting for a guarded upgrade to end: its instance's event stream when the
service offers it (every event about the instance re-reads the upgrade), else
polls of ``GET /v1/instances/{id}/upgrades/{upgrade_id}``."""

from __future__ import annotations

from typing import Any

from chroma_orch.cli_client.api import Api
from chroma_orch.cli_client.follow import Progress
from chroma_orch.cli_client.resource_wait import Waiter, wait_for
from chroma_orch.cli_client.upgrade_render import ENDED, progress_line

POLL_SECONDS = 1.0
"""Between two reads of the upgrade when there is no event stream."""


def wait_until_ended(
    api: Api, upgrade: dict[str, Any], timeout: float, progress: Progress
) -> dict[str, Any]:
    """The upgrade once it has ended (succeeded, rolled back or cancelled); raises
    ``CliError(FAILED)`` when ``timeout`` seconds passed first."""
    waiter = Waiter("the upgrade", timeout, progress, progress_line, _ended)
    path = f"/v1/instances/{upgrade['instance_id']}/upgrades/{upgrade['id']}"
    return wait_for(api, upgrade, path, str(upgrade["instance_id"]), waiter, POLL_SECONDS)


def _ended(upgrade: dict[str, Any]) -> bool:
    return upgrade["phase"] in ENDED
