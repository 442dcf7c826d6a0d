"""``chroma-orch snapshots ...`` (create, ls, get, rm, restore) and
``chroma-orch instances clone``: an instance's data kept, brought back, copied."""

from __future__ import annotations

from typing import Any

from chroma_orch.cli_client import admin, follow, instances, progress, render, snapshot_wait
from chroma_orch.cli_client import snapshot_render as show
from chroma_orch.cli_client.api import Api
from chroma_orch.cli_client.exits import OK
from chroma_orch.cli_client.options import Globals, Wait


def create(api: Api, options: Globals, ref: str, tenant: str | None, wait: Wait) -> int:
    instance_id = instances.resolve(api, ref, tenant)
    snapshot = api.post(f"/v1/instances/{instance_id}/snapshots", json={})
    if wait.enabled:
        with progress.phases(f"snapshot {snapshot['id']}", quiet=options.json) as report:
            snapshot = snapshot_wait.wait_until_ready(api, snapshot, wait.timeout, report)
    _show(options, snapshot, None if wait.enabled else "snapshot")
    return OK


def ls(api: Api, options: Globals, ref: str, tenant: str | None) -> int:
    instance_id = instances.resolve(api, ref, tenant)
    items: list[dict[str, Any]] = api.get(f"/v1/instances/{instance_id}/snapshots")["items"]
    if options.json:
        render.emit_json(items)
    elif items:
        show.print_snapshots(items)
    else:
        render.err("no snapshots")
    return OK


def get(api: Api, options: Globals, snapshot_id: str) -> int:
    _show(options, api.get(f"/v1/snapshots/{snapshot_id}"))
    return OK


def rm(api: Api, options: Globals, snapshot_id: str) -> int:
    _show(options, api.delete(f"/v1/snapshots/{snapshot_id}"), "delete")
    return OK


def restore(
    api: Api, options: Globals, ref: str, snapshot_id: str, tenant: str | None, wait: Wait
) -> int:
    """Ask for the restore; with --wait, follow the instance until it runs again."""
    instance_id = instances.resolve(api, ref, tenant)
    body = {"snapshot_id": snapshot_id}
    instance = api.post(f"/v1/instances/{instance_id}/restore", json=body)["instance"]
    if wait.enabled:
        with progress.phases(instance["name"], quiet=options.json) as report:
            instance = follow.wait_for_phase(api, instance, "running", wait.timeout, report)
    instances.show(options, instance, None if wait.enabled else "restore")
    return OK


def clone(
    api: Api, options: Globals, snapshot_id: str, name: str, tenant: str | None, wait: Wait
) -> int:
    """A new instance from the snapshot's data, in the snapshot's tenant unless
    ``tenant`` (admin) names another."""
    source = api.get(f"/v1/snapshots/{snapshot_id}")
    tenant_id = admin.tenant_id(api, tenant) if tenant else source["tenant_id"]
    body = {"name": name, "from_snapshot": snapshot_id, "tenant_id": tenant_id}
    instance = api.post("/v1/instances", json=body)["instance"]
    if wait.enabled:
        with progress.phases(name, quiet=options.json) as report:
            instance = follow.wait_for_phase(api, instance, "running", wait.timeout, report)
    instances.show(options, instance, None if wait.enabled else "clone")
    return OK


def _show(options: Globals, snapshot: dict[str, Any], action: str | None = None) -> None:
    """The snapshot as JSON, else one line: where it stands, or what was asked."""
    if options.json:
        render.emit_json(snapshot)
    elif action is not None:
        render.out(f"{action} accepted: {show.describe(snapshot)}")
    else:
        render.out(show.describe(snapshot))
