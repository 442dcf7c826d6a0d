"""``chroma-orch instances ...``: launch, ls, start, stop, restart, delete, logs."""

from __future__ import annotations

import argparse
import uuid
from typing import Any

from chroma_orch.cli_client import admin, follow, render, streams
from chroma_orch.cli_client.api import Api
from chroma_orch.cli_client.exits import NOT_FOUND, OK, USAGE, CliError

_WAIT_FOR = {"start": "running", "restart": "running", "stop": "stopped"}


def _progress(args: argparse.Namespace, name: str) -> follow.Progress:
    def report(phase: str) -> None:
        if not args.json:
            render.err(f"{name}: {phase}")

    return report


def list_all(api: Api, tenant: str | None = None) -> list[dict[str, Any]]:
    """Every instance the token can see (all pages)."""
    items: list[dict[str, Any]] = []
    params: dict[str, Any] = {"limit": 200}
    if tenant:
        params["tenant_id"] = admin.tenant_id(api, tenant)
    while True:
        page = api.get("/v1/instances", params=params)
        items += page["items"]
        if not page.get("next_cursor"):
            return items
        params["cursor"] = page["next_cursor"]


def resolve(api: Api, ref: str, tenant: str | None = None) -> str:
    """An instance id from an id, or from a name that only one visible instance has."""
    try:
        return str(uuid.UUID(ref))
    except ValueError:
        pass
    matches = [i for i in list_all(api, tenant) if i["name"] == ref]
    if not matches:
        raise CliError(NOT_FOUND, f"no instance named {ref!r}")
    if len(matches) > 1:
        ids = ", ".join(f"{i['id']} (tenant {i['tenant_id']})" for i in matches)
        raise CliError(USAGE, f"{len(matches)} instances are named {ref!r}: {ids}; use an id")
    return str(matches[0]["id"])


def launch(api: Api, args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"name": args.name}
    if args.tenant:
        body["tenant_id"] = admin.tenant_id(api, args.tenant)
    instance = api.post("/v1/instances", json=body)["instance"]
    if args.wait:
        instance = follow.wait_for_phase(
            api, instance, "running", args.timeout, _progress(args, args.name)
        )
    _show(args, instance, None if args.wait else "launch")
    return OK


def ls(api: Api, args: argparse.Namespace) -> int:
    instances = list_all(api, args.tenant)
    if args.json:
        render.emit_json(instances)
    elif instances:
        render.out(render.instance_rows(instances))
    else:
        render.err("no instances")
    return OK


def get(api: Api, args: argparse.Namespace) -> int:
    instance_id = resolve(api, args.instance, args.tenant)
    _show(args, api.get(f"/v1/instances/{instance_id}"))
    return OK


def act(api: Api, args: argparse.Namespace) -> int:
    """start, stop, restart: ask, then (with --wait) follow until it is done."""
    instance_id = resolve(api, args.instance, args.tenant)
    instance = api.post(f"/v1/instances/{instance_id}/{args.action}")["instance"]
    if args.wait:
        target = _WAIT_FOR[args.action]
        progress = _progress(args, instance["name"])
        instance = follow.wait_for_phase(api, instance, target, args.timeout, progress)
    _show(args, instance, None if args.wait else args.action)
    return OK


def delete(api: Api, args: argparse.Namespace) -> int:
    instance_id = resolve(api, args.instance, args.tenant)
    params = {"keep_data": "true"} if args.keep_data else None
    instance = api.delete(f"/v1/instances/{instance_id}", params=params)["instance"]
    if args.wait:
        follow.wait_until_gone(api, instance_id, args.timeout, _progress(args, instance["name"]))
        instance = {**instance, "phase": "deleted"}
    _show(args, instance, None if args.wait else "delete")
    return OK


def logs(api: Api, args: argparse.Namespace) -> int:
    instance_id = resolve(api, args.instance, args.tenant)
    try:
        if args.follow and streams.follow_logs(api, instance_id, args.tail, render.out):
            return OK
        body = api.get(f"/v1/instances/{instance_id}/logs", params={"tail": args.tail})
        if args.json and not args.follow:
            render.emit_json(body)
            return OK
        for line in body["lines"]:
            render.out(line)
        if args.follow:
            follow.follow_logs(api, instance_id, body["lines"], render.out)
    except KeyboardInterrupt:
        pass
    return OK


def _show(args: argparse.Namespace, instance: dict[str, Any], action: str | None = None) -> None:
    """The instance as JSON, else one line: where it stands, or what was asked."""
    if args.json:
        render.emit_json(instance)
    elif action is not None:
        render.out(render.accepted(instance, action))
    else:
        render.out(render.describe(instance))
