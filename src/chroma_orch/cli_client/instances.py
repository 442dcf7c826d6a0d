"""``chroma-orch instances ...``: launch, ls, update, start, stop, restart, delete,
undelete, logs."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from chroma_orch.cli_client import admin, follow, progress, render, streams
from chroma_orch.cli_client.api import Api
from chroma_orch.cli_client.exits import NOT_FOUND, OK, USAGE, CliError
from chroma_orch.cli_client.options import Globals, Wait
from chroma_orch.cli_client.spec_options import SpecFlags


@dataclass(frozen=True)
class Deletion:
    """How ``instances delete`` deletes."""

    keep_data: bool
    purge: bool
    wait: Wait


_WAIT_FOR = {"start": "running", "restart": "running", "stop": "stopped"}


def list_all(api: Api, tenant: str | None = None, deleted: bool = False) -> list[dict[str, Any]]:
    """Every instance the token can see (all pages); with ``deleted``, the deleted
    ones that can still be undeleted instead."""
    items: list[dict[str, Any]] = []
    params: dict[str, Any] = {"limit": 200}
    if deleted:
        params["deleted"] = "true"
    if tenant:
        params["tenant_id"] = admin.tenant_id(api, tenant)
    while True:
        page = api.get("/v1/instances", params=params)
        items += page["items"]
        if not page.get("next_cursor"):
            return items
        params["cursor"] = page["next_cursor"]


def resolve(api: Api, ref: str, tenant: str | None = None, deleted: bool | None = False) -> str:
    """An instance id from an id, or from a name that only one visible instance has:
    a live one (``deleted`` False), a deleted one (True), or live, else deleted (None)."""
    try:
        return str(uuid.UUID(ref))
    except ValueError:
        pass
    matches = [i for i in list_all(api, tenant, deleted is True) if i["name"] == ref]
    if not matches and deleted is None:
        matches = [i for i in list_all(api, tenant, True) if i["name"] == ref]
    if not matches:
        raise CliError(NOT_FOUND, f"no instance named {ref!r}")
    if len(matches) > 1:
        ids = ", ".join(f"{i['id']} (tenant {i['tenant_id']})" for i in matches)
        raise CliError(USAGE, f"{len(matches)} instances are named {ref!r}: {ids}; use an id")
    return str(matches[0]["id"])


@dataclass(frozen=True)
class NewInstance:
    """What ``instances launch`` asks for."""

    name: str
    tenant: str | None
    spec: SpecFlags
    labels: dict[str, str]


@dataclass(frozen=True)
class Change:
    """What ``instances update`` asks for (None: unchanged)."""

    spec: dict[str, Any] | None
    labels: dict[str, str] | None
    wait: Wait


def launch(api: Api, options: Globals, new: NewInstance, wait: Wait) -> int:
    body: dict[str, Any] = {"name": new.name}
    if new.tenant:
        body["tenant_id"] = admin.tenant_id(api, new.tenant)
    if (spec := new.spec.request()) is not None:
        body["spec"] = spec
    if new.labels:
        body["labels"] = new.labels
    instance = api.post("/v1/instances", json=body)["instance"]
    if wait.enabled:
        with progress.phases(new.name, quiet=options.json) as report:
            instance = follow.wait_for_phase(api, instance, "running", wait.timeout, report)
    show(options, instance, None if wait.enabled else "launch")
    return OK


def ls(api: Api, options: Globals, tenant: str | None, deleted: bool = False) -> int:
    instances = list_all(api, tenant, deleted)
    if options.json:
        render.emit_json(instances)
    elif instances:
        render.print_instances(instances)
    else:
        render.err("no deleted instances" if deleted else "no instances")
    return OK


def get(api: Api, options: Globals, ref: str, tenant: str | None) -> int:
    instance_id = resolve(api, ref, tenant)
    show(options, api.get(f"/v1/instances/{instance_id}"))
    return OK


def act(api: Api, options: Globals, action: str, ref: str, tenant: str | None, wait: Wait) -> int:
    """start, stop, restart: ask, then (with --wait) follow until it is done."""
    instance_id = resolve(api, ref, tenant)
    instance = api.post(f"/v1/instances/{instance_id}/{action}")["instance"]
    if wait.enabled:
        with progress.phases(instance["name"], quiet=options.json) as report:
            target = _WAIT_FOR[action]
            instance = follow.wait_for_phase(api, instance, target, wait.timeout, report)
    show(options, instance, None if wait.enabled else action)
    return OK


def update(api: Api, options: Globals, ref: str, tenant: str | None, change: Change) -> int:
    """PATCH the spec and/or labels; with --wait, until the new generation runs (or,
    stopped, is recorded)."""
    instance_id = resolve(api, ref, tenant)
    body: dict[str, Any] = {}
    if change.spec is not None:
        body["spec"] = change.spec
    if change.labels is not None:
        body["labels"] = change.labels
    instance = api.patch(f"/v1/instances/{instance_id}", json=body)
    if change.wait.enabled:
        target = "running" if instance["desired_state"] == "running" else "stopped"
        with progress.phases(instance["name"], quiet=options.json) as report:
            instance = follow.wait_for_phase(api, instance, target, change.wait.timeout, report)
    show(options, instance)
    return OK


def delete(api: Api, options: Globals, ref: str, tenant: str | None, how: Deletion) -> int:
    """Delete (kept for an undelete unless ``purge``); ``--purge`` also purges an
    instance that is already deleted."""
    instance_id = resolve(api, ref, tenant, None if how.purge else False)
    params = {"keep_data": str(how.keep_data).lower(), "purge": str(how.purge).lower()}
    wait = how.wait
    instance = api.delete(f"/v1/instances/{instance_id}", params=params)["instance"]
    if wait.enabled:
        with progress.phases(instance["name"], quiet=options.json) as report:
            follow.wait_until_gone(api, instance_id, wait.timeout, report)
        instance = {**instance, "phase": "deleted"}
    show(options, instance, None if wait.enabled else "delete")
    return OK


def undelete(api: Api, options: Globals, ref: str, tenant: str | None, wait: Wait) -> int:
    """Bring a deleted instance back with its data; with --wait, until it runs."""
    instance_id = resolve(api, ref, tenant, deleted=True)
    instance = api.post(f"/v1/instances/{instance_id}/undelete")["instance"]
    if wait.enabled:
        with progress.phases(instance["name"], quiet=options.json) as report:
            instance = follow.wait_for_phase(api, instance, "running", wait.timeout, report)
    show(options, instance, None if wait.enabled else "undelete")
    return OK


def logs(
    api: Api, options: Globals, ref: str, tenant: str | None, tail: int, keep_following: bool
) -> int:
    instance_id = resolve(api, ref, tenant)
    try:
        if keep_following and streams.follow_logs(api, instance_id, tail, render.out):
            return OK
        body = api.get(f"/v1/instances/{instance_id}/logs", params={"tail": tail})
        if options.json and not keep_following:
            render.emit_json(body)
            return OK
        for line in body["lines"]:
            render.out(line)
        if keep_following:
            follow.follow_logs(api, instance_id, body["lines"], render.out)
    except KeyboardInterrupt:
        pass
    return OK


def show(options: Globals, instance: dict[str, Any], action: str | None = None) -> None:
    """The instance as JSON, else one line: where it stands, or what was asked."""
    if options.json:
        render.emit_json(instance)
    elif action is not None:
        render.out(render.accepted(instance, action))
    else:
        render.out(render.describe(instance))
