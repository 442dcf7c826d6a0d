"""Every route × every kind of unusable or foreign token: refused, and nothing leaks.

Token kinds: none, a malformed one, a well-formed unknown one, another tenant's,
a revoked one and an expired one. Routes come from the live OpenAPI document,
so a route added later is covered without touching this test.
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from tests.helpers import bearer, create_tenant

PUBLIC = {"/healthz", "/readyz"}
COLLECTIONS = {("GET", "/v1/instances"), ("GET", "/v1/tenants")}


async def _victim(client: httpx.AsyncClient) -> dict[str, str]:
    tenant_id, token = await create_tenant(client, "victim")
    created = await client.post(
        "/v1/instances", json={"name": "secret-name"}, headers=bearer(token)
    )
    instance = created.json()["instance"]
    snapshot = await client.post(f"/v1/instances/{instance['id']}/snapshots", headers=bearer(token))
    return {
        "tenant_id": tenant_id,
        "instance_id": instance["id"],
        "snapshot_id": snapshot.json()["id"],
        "token": token,
    }


async def _tokens(client: httpx.AsyncClient, app: FastAPI) -> dict[str, str | None]:
    tenant_id, other = await create_tenant(client, "other")
    _, revoked = await create_tenant(client, "revoked")
    tokens = (await client.get("/v1/tenants")).json()
    revoked_tenant = next(t["id"] for t in tokens if t["name"] == "revoked")
    listed = (await client.get(f"/v1/tenants/{revoked_tenant}/tokens")).json()
    await client.delete(f"/v1/tokens/{listed[0]['id']}")
    expiring = await client.post(
        f"/v1/tenants/{tenant_id}/tokens", json={"name": "exp", "expires_in_seconds": 60}
    )
    async with app.state.ctx.engine.begin() as conn:
        await conn.exec_driver_sql(
            "UPDATE api_tokens SET expires_at = now() - interval '1 second' WHERE name = 'exp'"
        )
    return {
        "none": None,
        "malformed": "not a token at all",
        "unknown": "co_" + "x" * 43,
        "other_tenant": other,
        "revoked": revoked,
        "expired": expiring.json()["token"],
    }


def _body(method: str, template: str, victim: dict[str, str]) -> dict[str, Any] | None:
    """A valid body, so every answer is about the token, not the input."""
    bodies: dict[tuple[str, str], dict[str, Any]] = {
        ("POST", "/v1/instances"): {"name": "intruder", "tenant_id": victim["tenant_id"]},
        ("POST", "/v1/tenants"): {"name": "intruder"},
        ("POST", "/v1/tenants/{tenant_id}/tokens"): {"name": "intruder"},
        ("POST", "/launch"): {"user_id": "victim"},
        ("PATCH", "/v1/instances/{instance_id}"): {"idle_timeout_seconds": 60},
        ("PATCH", "/v1/tenants/{tenant_id}"): {"idle_timeout_seconds": 60},
        ("POST", "/v1/instances/{instance_id}/restore"): {"snapshot_id": victim["snapshot_id"]},
        ("POST", "/v1/instances/{instance_id}/upgrade"): {"chroma_version": "1.5.8"},
        ("PUT", "/v1/instances/{instance_id}/snapshot-schedule"): {"every": 3600, "keep": 1},
        ("PUT", "/v1/tenants/{tenant_id}/snapshot-schedule"): {"every": 3600, "keep": 1},
        ("POST", "/v1/upgrades"): {"chroma_version": "1.5.9"},
        ("PUT", "/v1/plans/{name}"): {"quota": {"cpu": 1}},
    }
    return bodies.get((method, template))


def _operations(
    spec: dict[str, Any], victim: dict[str, str]
) -> list[tuple[str, str, dict[str, Any] | None]]:
    operations = []
    for template, methods in spec["paths"].items():
        if template in PUBLIC:
            continue
        path = (
            template.replace("{instance_id}", victim["instance_id"])
            .replace("{tenant_id}", victim["tenant_id"])
            .replace("{snapshot_id}", victim["snapshot_id"])
            .replace("{token_id}", str(uuid.uuid4()))
            .replace("{upgrade_id}", str(uuid.uuid4()))
            .replace("{rollout_id}", str(uuid.uuid4()))
            .replace("{user_id}", "victim")
            .replace("{path}", "api/v2/heartbeat")
            .replace("{name}", "victim-plan")
        )
        if template == "/v1/instances/import":  # its parameters are in the query
            path += f"?name=intruder&tenant_id={victim['tenant_id']}"
        operations += [
            (method.upper(), path, _body(method.upper(), template, victim)) for method in methods
        ]
    return operations


async def test_every_route_refuses_every_unusable_token(
    client: httpx.AsyncClient, api_app: FastAPI
) -> None:
    victim = await _victim(client)
    tokens = await _tokens(client, api_app)
    spec = (await client.get("/openapi.json")).json()
    operations = _operations(spec, victim)
    assert len(operations) >= 15
    failures = []
    transport = httpx.ASGITransport(app=api_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as anon:
        for kind, token in tokens.items():
            headers = bearer(token) if token else {}
            for method, path, body in operations:
                response = await anon.request(method, path, headers=headers, json=body)
                problem = _check(kind, method, path, response, victim)
                if problem:
                    failures.append(problem)
    assert not failures, "\n".join(failures)


def _check(
    kind: str, method: str, path: str, response: httpx.Response, victim: dict[str, str]
) -> str | None:
    where = f"{kind:13} {method:6} {path} -> {response.status_code}"
    body = response.text
    if "secret-name" in body or victim["token"] in body:
        return f"{where}: leaks the victim's data"
    if kind == "other_tenant" and (method, path) in COLLECTIONS:
        return None if response.status_code == 200 else f"{where}: expected 200 (own data only)"
    if response.status_code not in (401, 403, 404):
        return f"{where}: expected 401/403/404"
    if kind != "other_tenant" and response.status_code != 401:
        return f"{where}: an unusable token must be a 401"
    return None


@pytest.mark.parametrize("header", ["Authorization", "X-Chroma-Token"])
async def test_the_admin_token_is_not_echoed(client: httpx.AsyncClient, header: str) -> None:
    token = "co_" + "y" * 43
    response = await client.get("/v1/instances/not-a-uuid", headers={header: token})
    assert token not in response.text
