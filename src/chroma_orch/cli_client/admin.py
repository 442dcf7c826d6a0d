"""``chroma-orch tenants ...`` and ``chroma-orch tokens ...`` (admin token needed,
except ``tenants ls``, which shows a tenant token its own tenant)."""

from __future__ import annotations

import uuid
from typing import Any

from chroma_orch.cli_client import render
from chroma_orch.cli_client.api import Api
from chroma_orch.cli_client.exits import NOT_FOUND, OK, CliError
from chroma_orch.cli_client.options import Globals


def tenant_id(api: Api, ref: str) -> str:
    """A tenant id from an id or a tenant name."""
    try:
        return str(uuid.UUID(ref))
    except ValueError:
        pass
    for tenant in api.get("/v1/tenants"):
        if tenant["name"] == ref:
            return str(tenant["id"])
    raise CliError(NOT_FOUND, f"no tenant named {ref!r}")


def tenants_create(api: Api, options: Globals, name: str) -> int:
    tenant = api.post("/v1/tenants", json={"name": name})
    if options.json:
        render.emit_json(tenant)
    else:
        render.out(f"tenant {tenant['name']} created: {tenant['id']}")
    return OK


def tenants_ls(api: Api, options: Globals) -> int:
    tenants: list[dict[str, Any]] = api.get("/v1/tenants")
    if options.json:
        render.emit_json(tenants)
    elif tenants:
        rows = [[t["name"], t["id"], render.age(t.get("created_at"))] for t in tenants]
        render.print_table(["NAME", "ID", "AGE"], rows)
    else:
        render.err("no tenants")
    return OK


def tokens_create(
    api: Api, options: Globals, tenant_ref: str, name: str, expires_in: int | None
) -> int:
    """Prints only the secret on stdout (``TOKEN=$(chroma-orch tokens create ...)``)."""
    body: dict[str, Any] = {"name": name}
    if expires_in is not None:
        body["expires_in_seconds"] = expires_in
    tenant = tenant_id(api, tenant_ref)
    token = api.post(f"/v1/tenants/{tenant}/tokens", json=body)
    if options.json:
        render.emit_json(token)
        return OK
    expires = token.get("expires_at") or "never"
    render.err(
        f"token {token['name']} ({token['id']}) for tenant {tenant}, expires {expires}; "
        "the secret below is shown only once:"
    )
    render.out(token["token"])
    return OK
