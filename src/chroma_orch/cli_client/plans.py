"""``chroma-orch plans ...`` (admin): put, ls, get, delete, and a tenant's plan."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from chroma_orch.cli_client import admin, render
from chroma_orch.cli_client.api import Api
from chroma_orch.cli_client.exits import OK, USAGE, CliError
from chroma_orch.cli_client.options import Globals


def read_definition(source: str) -> dict[str, Any]:
    """A plan definition from a JSON file (``-`` is not read: the definition is
    inline JSON when it starts with ``{``)."""
    text = source if source.lstrip().startswith("{") else Path(source).read_text()
    try:
        definition = json.loads(text)
    except ValueError as exc:
        raise CliError(USAGE, f"the plan definition is not JSON: {exc}") from exc
    if not isinstance(definition, dict):
        raise CliError(USAGE, "the plan definition is a JSON object")
    return definition


def _show(options: Globals, plan: dict[str, Any]) -> None:
    if options.json:
        render.emit_json(plan)
    else:
        render.out(f"plan {plan['name']} ({plan['tenants']} tenants)")
        render.out(json.dumps(plan["definition"], indent=2, sort_keys=True))


def put(api: Api, options: Globals, name: str, source: str) -> int:
    _show(options, api.put(f"/v1/plans/{name}", json=read_definition(source)))
    return OK


def get(api: Api, options: Globals, name: str) -> int:
    _show(options, api.get(f"/v1/plans/{name}"))
    return OK


def ls(api: Api, options: Globals) -> int:
    plans: list[dict[str, Any]] = api.get("/v1/plans")
    if options.json:
        render.emit_json(plans)
    elif plans:
        render.print_table(
            ["NAME", "TENANTS", "QUOTA"],
            [[p["name"], str(p["tenants"]), _quota(p["definition"])] for p in plans],
        )
    else:
        render.err("no plans")
    return OK


def _quota(definition: dict[str, Any]) -> str:
    quota = definition.get("quota") or {}
    parts = [f"{key}={value}" for key, value in sorted(quota.items()) if value is not None]
    return ",".join(parts) or "-"


def delete(api: Api, options: Globals, name: str) -> int:
    api.delete(f"/v1/plans/{name}")
    if not options.json:
        render.out(f"plan {name} deleted")
    return OK


def assign(api: Api, options: Globals, tenant: str, name: str | None) -> int:
    """Give ``tenant`` the plan ``name`` (None: the default plan)."""
    tenant_id = admin.tenant_id(api, tenant)
    updated = api.patch(f"/v1/tenants/{tenant_id}", json={"plan": name})
    if options.json:
        render.emit_json(updated)
    else:
        render.out(f"tenant {updated['name']}: plan {updated['plan'] or '(default)'}")
    return OK
