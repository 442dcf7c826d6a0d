"""``chroma-orch snapshots schedule set|get|rm``: an instance's own snapshot schedule,
or (with ``--tenant`` and no instance) a tenant's."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from chroma_orch.cli_client import admin, durations, instances, render
from chroma_orch.cli_client.api import Api
from chroma_orch.cli_client.exits import OK
from chroma_orch.cli_client.options import Globals


@dataclass(frozen=True)
class Target:
    """Whose schedule: an instance (``tenant`` only narrows a name lookup), else the
    tenant's (the command checks that one of them is given)."""

    instance: str | None
    tenant: str | None

    def path(self, api: Api) -> str:
        if self.instance is not None:
            instance_id = instances.resolve(api, self.instance, self.tenant)
            return f"/v1/instances/{instance_id}/snapshot-schedule"
        assert self.tenant is not None
        return f"/v1/tenants/{admin.tenant_id(api, self.tenant)}/snapshot-schedule"


def set_(api: Api, options: Globals, target: Target, every: int, keep: int) -> int:
    schedule = api.put(target.path(api), json={"every": every, "keep": keep})
    _show(options, schedule, "set: ")
    return OK


def get(api: Api, options: Globals, target: Target) -> int:
    _show(options, api.get(target.path(api)))
    return OK


def rm(api: Api, options: Globals, target: Target) -> int:
    api.delete(target.path(api))
    if options.json:
        render.emit_json({"removed": True})
    elif target.instance is not None:
        render.out(f"removed the own snapshot schedule of instance {target.instance}")
    else:
        render.out(f"removed the snapshot schedule of tenant {target.tenant}")
    return OK


def describe(schedule: dict[str, Any]) -> str:
    """One line: whose schedule, how often, how many kept, when next."""
    owner = (
        f"instance {schedule['instance_id']}"
        if schedule.get("instance_id")
        else f"tenant {schedule['tenant_id']}"
    )
    line = (
        f"snapshot schedule of {owner}: every {durations.format_seconds(schedule['every'])}, "
        f"keep {schedule['keep']}"
    )
    if schedule.get("next_snapshot_at"):
        line += f", next at {schedule['next_snapshot_at']}"
    return line


def _show(options: Globals, schedule: dict[str, Any], prefix: str = "") -> None:
    if options.json:
        render.emit_json(schedule)
    else:
        render.out(prefix + describe(schedule))
