"""``chroma-orch instances upgrade`` and ``instances upgrades``: guarded upgrades of
one instance's Chroma version. ``--wait`` follows the upgrade until it ended:
succeeded exits 0; rolled back or cancelled exits ``ROLLED_BACK`` (9) with the
failure and what the parity probe found different."""

from __future__ import annotations

from typing import Any

from chroma_orch.cli_client import instances, progress, render
from chroma_orch.cli_client import upgrade_render as show
from chroma_orch.cli_client.api import Api
from chroma_orch.cli_client.exits import OK, ROLLED_BACK, CliError
from chroma_orch.cli_client.options import Globals, Wait
from chroma_orch.cli_client.upgrade_wait import wait_until_ended


def upgrade(
    api: Api, options: Globals, ref: str, tenant: str | None, version: str, wait: Wait
) -> int:
    """Ask for the upgrade; with --wait, follow it until it ended."""
    instance_id = instances.resolve(api, ref, tenant)
    body = {"chroma_version": version}
    asked: dict[str, Any] = api.post(f"/v1/instances/{instance_id}/upgrade", json=body)
    if not wait.enabled:
        _emit(options, asked, "upgrade accepted: ", " (--wait follows it)")
        return OK
    with progress.phases(ref, quiet=options.json) as report:
        done = wait_until_ended(api, asked, wait.timeout, report)
    _emit(options, done)
    if done["phase"] != "succeeded":
        message = f"upgrade to {done.get('to_version')} {done['phase']}: {show.failure_text(done)}"
        raise CliError(ROLLED_BACK, message)  # the JSON is printed already
    return OK


def ls(api: Api, options: Globals, ref: str, tenant: str | None) -> int:
    instance_id = instances.resolve(api, ref, tenant)
    items: list[dict[str, Any]] = api.get(f"/v1/instances/{instance_id}/upgrades")["items"]
    if options.json:
        render.emit_json(items)
    elif items:
        show.print_upgrades(items)
    else:
        render.err("no upgrades")
    return OK


def get(api: Api, options: Globals, ref: str, tenant: str | None, upgrade_id: str) -> int:
    instance_id = instances.resolve(api, ref, tenant)
    _emit(options, api.get(f"/v1/instances/{instance_id}/upgrades/{upgrade_id}"))
    return OK


def _emit(options: Globals, upgrade: dict[str, Any], before: str = "", after: str = "") -> None:
    """The upgrade as JSON, else its description (``before`` and ``after`` its first line)."""
    if options.json:
        render.emit_json(upgrade)
        return
    first, *rest = show.describe(upgrade)
    render.out(before + first + after)
    for line in rest:
        render.out(line)
