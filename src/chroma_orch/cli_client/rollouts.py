"""``chroma-orch upgrades create``, ``restarts create`` and ``rollouts ...`` (admin):
fleet operations in waves. ``--wait`` follows the rollout on the admins' event
stream (or polls) until it succeeded (exit 0), halted or was cancelled (exit 1)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from chroma_orch.cli_client import admin, render
from chroma_orch.cli_client.api import Api
from chroma_orch.cli_client.exits import FAILED, OK, USAGE, CliError
from chroma_orch.cli_client.follow import Progress
from chroma_orch.cli_client.options import Globals, Wait
from chroma_orch.cli_client.progress import phases
from chroma_orch.cli_client.resource_wait import Waiter, wait_for

POLL_SECONDS = 1.0
_ENDED = {"succeeded", "halted", "cancelled"}


@dataclass(frozen=True)
class Plan:
    """What ``upgrades create`` and ``restarts create`` share."""

    tenants: list[str]
    labels: list[str]
    versions: list[str]
    waves: str | None
    pause: int | None
    error_budget: int | None
    max_concurrent: int | None

    def body(self, api: Api) -> dict[str, Any]:
        selector: dict[str, Any] = {}
        if self.tenants:
            selector["tenant_ids"] = [admin.tenant_id(api, t) for t in self.tenants]
        if self.labels:
            selector["labels"] = dict(_label(label) for label in self.labels)
        if self.versions:
            selector["chroma_versions"] = self.versions
        body: dict[str, Any] = {"selector": selector}
        if self.waves is not None:
            body["waves"] = _waves(self.waves)
        for key, value in (
            ("pause_seconds", self.pause),
            ("error_budget", self.error_budget),
            ("max_concurrent", self.max_concurrent),
        ):
            if value is not None:
                body[key] = value
        return body


def _label(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise CliError(USAGE, f"--label takes KEY=VALUE, not {text!r}")
    return key, value


def _waves(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",")]
    except ValueError as exc:
        raise CliError(USAGE, f"--waves takes percentages like 1,10,100, not {text!r}") from exc


def create(
    api: Api, options: Globals, kind: str, plan: Plan, version: str | None, wanted: Wait
) -> int:
    body = plan.body(api)
    if version is not None:
        body["chroma_version"] = version
    rollout = api.post("/v1/upgrades" if kind == "upgrade" else "/v1/restarts", json=body)
    if not options.json:
        render.out(f"{kind} rollout {rollout['id']} created: {rollout['members']} instances")
    if wanted.enabled:
        with phases(f"rollout {rollout['id']}", quiet=options.json) as progress:
            rollout = wait_until_ended(api, rollout, wanted.timeout, progress)
    if options.json:
        render.emit_json(rollout)
    elif wanted.enabled:
        render.out(describe(rollout))
    if wanted.enabled and rollout["state"] != "succeeded":
        raise CliError(FAILED, f"rollout {rollout['state']}: {rollout.get('message')}", rollout)
    return OK


def progress_line(rollout: dict[str, Any]) -> str:
    """``running, wave 2/3: 4/10 done, 2 active, 1 failed``."""
    waves = rollout["waves"]
    current = waves[min(rollout["current_wave"], len(waves) - 1)] if waves else None
    line = f"{rollout['state']}, wave {rollout['current_wave'] + 1}/{len(waves)}"
    if current is not None:
        counts = current["counts"]
        done = current["members"] - counts["waiting"] - counts["active"]
        bad = counts["failed"] + counts["rolled_back"]
        line += f": {done}/{current['members']} done, {counts['active']} active, {bad} failed"
    return line


def wait_until_ended(
    api: Api, rollout: dict[str, Any], timeout: float, progress: Progress
) -> dict[str, Any]:
    waiter = Waiter("the rollout", timeout, progress, progress_line, _ended)
    return wait_for(api, rollout, f"/v1/rollouts/{rollout['id']}", None, waiter, POLL_SECONDS)


def _ended(rollout: dict[str, Any]) -> bool:
    return rollout["state"] in _ENDED


def describe(rollout: dict[str, Any]) -> str:
    request = rollout["request"]
    what = f"upgrade to {request['chroma_version']}" if rollout["kind"] == "upgrade" else "restart"
    line = f"rollout {rollout['id']} ({what}, {rollout['members']} instances): "
    line += progress_line(rollout)
    if rollout.get("message"):
        line += f" — {rollout['message']}"
    return line


def ls(api: Api, options: Globals, state: str | None) -> int:
    rollouts: list[dict[str, Any]] = api.get(
        "/v1/rollouts", params={"state": state} if state else {}
    )
    if options.json:
        render.emit_json(rollouts)
    for rollout in [] if options.json else rollouts:
        render.out(describe(rollout))
    if not rollouts and not options.json:
        render.out("no rollouts")
    return OK


def show(api: Api, options: Globals, rollout_id: str) -> int:
    rollout = api.get(f"/v1/rollouts/{rollout_id}")
    if options.json:
        render.emit_json(rollout)
        return OK
    render.out(describe(rollout))
    for wave in rollout["waves"]:
        counts = ", ".join(f"{n} {state}" for state, n in wave["counts"].items() if n)
        render.out(f"  wave {wave['wave'] + 1} (to {wave['percent']}%): {counts or 'empty'}")
    return OK


def act(api: Api, options: Globals, rollout_id: str, action: str) -> int:
    rollout = api.post(f"/v1/rollouts/{rollout_id}/{action}")
    if options.json:
        render.emit_json(rollout)
    else:
        render.out(describe(rollout))
    return OK
