"""The /v1 instance API against real PostgreSQL, reconciler off: what it writes."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import pytest
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from chroma_orch.db.models import Event, Instance, Intent
from chroma_orch.domain.auth import hash_token
from tests.helpers import bearer, create_tenant, settle, wait_for


async def _counts(engine: AsyncEngine) -> tuple[int, int, int]:
    async with engine.connect() as conn:
        return (
            await conn.scalar(select(func.count()).select_from(Instance)) or 0,
            await conn.scalar(select(func.count()).select_from(Intent)) or 0,
            await conn.scalar(select(func.count()).select_from(Event)) or 0,
        )


async def test_create_answers_202_with_instance_and_intent(client: httpx.AsyncClient) -> None:
    _, token = await create_tenant(client, "acme")
    response = await client.post("/v1/instances", json={"name": "main"}, headers=bearer(token))
    assert response.status_code == 202, response.text
    body = response.json()
    instance, intent = body["instance"], body["intent"]
    assert instance["name"] == "main"
    assert instance["desired_state"] == "running"
    assert instance["phase"] == "pending"
    assert instance["generation"] == 1
    assert instance["observed_generation"] == 0
    assert intent["action"] == "create"
    assert intent["status"] == "pending"
    assert intent["instance_id"] == instance["id"]
    got = await client.get(f"/v1/instances/{instance['id']}", headers=bearer(token))
    assert got.status_code == 200
    assert got.json()["id"] == instance["id"]


async def test_admin_must_name_the_tenant(client: httpx.AsyncClient) -> None:
    tenant_id, _ = await create_tenant(client, "acme")
    assert (await client.post("/v1/instances", json={"name": "x"})).status_code == 403
    response = await client.post("/v1/instances", json={"name": "x", "tenant_id": tenant_id})
    assert response.status_code == 202
    missing = await client.post("/v1/instances", json={"name": "x", "tenant_id": str(uuid.uuid4())})
    assert missing.status_code == 404


async def test_duplicate_name_conflicts(client: httpx.AsyncClient) -> None:
    _, token = await create_tenant(client, "acme")
    assert (await client.post("/v1/instances", json={}, headers=bearer(token))).status_code == 202
    again = await client.post("/v1/instances", json={}, headers=bearer(token))
    assert again.status_code == 409
    assert again.json()["code"] == "conflict"
    assert again.headers["content-type"] == "application/problem+json"


async def test_racing_creates_and_actions_each_take_effect_once(
    client: httpx.AsyncClient, api_app: object
) -> None:
    """Requests that race on one name, or on one instance, are decided by the
    database (a unique name, a generation check), not by who read first."""
    _, token = await create_tenant(client, "acme")
    answers = await asyncio.gather(
        *(client.post("/v1/instances", json={"name": "x"}, headers=bearer(token)) for _ in range(8))
    )
    assert sorted(a.status_code for a in answers) == [202] + [409] * 7
    instance_id = next(a.json()["instance"]["id"] for a in answers if a.status_code == 202)
    stops = await asyncio.gather(
        *(client.post(f"/v1/instances/{instance_id}/stop", headers=bearer(token)) for _ in range(6))
    )
    assert {s.status_code for s in stops} == {202}
    generations = sorted(s.json()["intent"]["target_generation"] for s in stops)
    assert generations == [2] * 6  # one of them changed the desired state; none twice
    got = (await client.get(f"/v1/instances/{instance_id}", headers=bearer(token))).json()
    assert (got["desired_state"], got["generation"]) == ("stopped", 2)
    engine: AsyncEngine = api_app.state.ctx.engine  # type: ignore[attr-defined]
    async with engine.connect() as conn:
        changes = await conn.scalar(
            select(func.count()).where(
                Event.instance_id == uuid.UUID(instance_id),
                Event.type == "instance.desired_changed",
            )
        )
    assert changes == 1


async def test_a_repeated_request_makes_the_instance_due_again(
    client: httpx.AsyncClient, api_app: object
) -> None:
    """A repeated stop changes nothing, but its intent is open until the reconciler
    settles it: if the reconciler was finishing this very instance (so the repeat's
    notification found it leased), the instance must still be due afterwards."""
    _, token = await create_tenant(client, "acme")
    created = await client.post("/v1/instances", json={"name": "x"}, headers=bearer(token))
    instance_id = uuid.UUID(created.json()["instance"]["id"])
    stopped = await client.post(f"/v1/instances/{instance_id}/stop", headers=bearer(token))
    assert stopped.status_code == 202
    engine: AsyncEngine = api_app.state.ctx.engine  # type: ignore[attr-defined]
    async with engine.begin() as conn:  # as a claim leaves it: leased, not due
        await conn.execute(
            update(Instance).where(Instance.id == instance_id).values(next_reconcile_at=None)
        )
    repeated = await client.post(f"/v1/instances/{instance_id}/stop", headers=bearer(token))
    assert repeated.json()["intent"]["status"] == "pending"
    async with engine.connect() as conn:
        due = await conn.scalar(
            select(Instance.next_reconcile_at).where(Instance.id == instance_id)
        )
    assert due is not None


async def _repeat_50(
    client: httpx.AsyncClient, engine: AsyncEngine, method: str, url: str, token: str | None
) -> set[tuple[int, str | None, str | None]]:
    """Send a request 50 times (as the admin without ``token``); checks that it added
    no row, and returns the distinct answers (status, intent id, intent status)."""
    before = await _counts(engine)
    answers = set()
    for _ in range(50):
        headers = bearer(token) if token else None
        response = await client.request(method, url, headers=headers)
        intent = response.json().get("intent") or {}
        answers.add((response.status_code, intent.get("id"), intent.get("status")))
    assert await _counts(engine) == before, (method, url)
    return answers


async def test_repeated_no_op_actions_add_no_rows(
    client: httpx.AsyncClient, api_app: object
) -> None:
    """A request that changes nothing (a stop of a stopping or stopped instance, a
    start of a running one, a delete of a deleted one, the seed routes alike)
    answers 202 with the intent already carrying that state, and writes no row."""
    engine: AsyncEngine = api_app.state.ctx.engine  # type: ignore[attr-defined]
    _, token = await create_tenant(client, "acme")
    created = (await client.post("/v1/instances", json={}, headers=bearer(token))).json()
    instance_id, create_intent = created["instance"]["id"], created["intent"]["id"]
    url = f"/v1/instances/{instance_id}"
    # While the reconciler has not acted yet: the open intent is the answer.
    assert await _repeat_50(client, engine, "POST", f"{url}/start", token) == {
        (202, create_intent, "pending")
    }
    await settle(engine, instance_id, "running")
    assert await _repeat_50(client, engine, "POST", f"{url}/start", token) == {
        (202, create_intent, "succeeded")
    }
    stop = (await client.post(f"{url}/stop", headers=bearer(token))).json()["intent"]["id"]
    assert await _repeat_50(client, engine, "POST", f"{url}/stop", token) == {
        (202, stop, "pending")
    }
    await settle(engine, instance_id, "stopped")
    assert await _repeat_50(client, engine, "POST", f"{url}/stop", token) == {
        (202, stop, "succeeded")
    }
    delete = (await client.delete(url, headers=bearer(token))).json()["intent"]["id"]
    await settle(engine, instance_id, "deleted")
    assert await _repeat_50(client, engine, "DELETE", url, token) == {(202, delete, "succeeded")}
    # The seed routes: a stopped user's instance, stopped again; a running one, launched.
    await client.post("/launch", json={"user_id": "bob"})
    seed_id = (await client.get("/status/bob")).json()["id"]
    await settle(engine, seed_id, "running")
    launches = set()
    before = await _counts(engine)
    for _ in range(50):
        launches.add((await client.post("/launch", json={"user_id": "bob"})).status_code)
    assert (launches, await _counts(engine)) == ({200}, before)
    await client.post("/stop/bob")
    await settle(engine, seed_id, "stopped")
    assert await _repeat_50(client, engine, "POST", "/stop/bob", None) == {(202, None, None)}


async def test_idempotency_key(client: httpx.AsyncClient, api_app: object) -> None:
    _, token = await create_tenant(client, "acme")
    headers = {**bearer(token), "Idempotency-Key": "k-1"}
    first = await client.post("/v1/instances", json={"name": "a"}, headers=headers)
    second = await client.post("/v1/instances", json={"name": "a"}, headers=headers)
    assert first.status_code == second.status_code == 202
    assert first.json()["instance"]["id"] == second.json()["instance"]["id"]
    assert first.json()["intent"]["id"] == second.json()["intent"]["id"]
    other = await client.post("/v1/instances", json={"name": "b"}, headers=headers)
    assert other.status_code == 409
    assert other.json()["code"] == "idempotency_key_reused"
    listed = await client.get("/v1/instances", headers=bearer(token))
    assert [i["name"] for i in listed.json()["items"]] == ["a"]


BAD_BODIES: list[tuple[str, bytes, str]] = [
    ("malformed json", b'{"name": ', "application/json"),
    ("unknown field", b'{"name": "a", "image": "evil"}', "application/json"),
    ("too long", b'{"name": "' + b"a" * 64 + b'"}', "application/json"),
    ("odd characters", b'{"name": "../etc"}', "application/json"),
    ("upper case", b'{"name": "Main"}', "application/json"),
    ("wrong type", b'{"name": 42}', "application/json"),
    ("not an object", b"[1, 2]", "application/json"),
    ("not json", b"name=a", "application/x-www-form-urlencoded"),
    ("bad tenant id", b'{"tenant_id": "nope"}', "application/json"),
    ("nul byte", b'{"name": "a\\u0000"}', "application/json"),
]


@pytest.mark.parametrize(
    ("case", "body", "content_type"), BAD_BODIES, ids=[c[0] for c in BAD_BODIES]
)
async def test_bad_input_is_4xx_problem_and_changes_nothing(
    client: httpx.AsyncClient, api_app: object, case: str, body: bytes, content_type: str
) -> None:
    _, token = await create_tenant(client, "acme")
    engine = api_app.state.ctx.engine  # type: ignore[attr-defined]
    before = await _counts(engine)
    response = await client.post(
        "/v1/instances", content=body, headers={**bearer(token), "Content-Type": content_type}
    )
    assert 400 <= response.status_code < 500, (case, response.status_code, response.text)
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["status"] == response.status_code
    assert problem["code"]
    assert await _counts(engine) == before


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer nope"},
        {"Authorization": "Basic Zm9vOmJhcg=="},
        {"Authorization": "Bearer " + "x" * 5000},
    ],
)
async def test_missing_or_bad_token_is_401(
    client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    async with httpx.AsyncClient(transport=client._transport, base_url="http://testserver") as anon:
        for method, path in [
            ("GET", "/v1/instances"),
            ("POST", "/v1/instances"),
            ("GET", f"/v1/instances/{uuid.uuid4()}"),
            ("POST", "/v1/tenants"),
            ("POST", "/launch"),
            ("GET", "/status/someone"),
        ]:
            response = await anon.request(method, path, headers=headers, json={})
            assert response.status_code == 401, (method, path, response.text)
            assert response.json()["code"] == "unauthorized"


async def test_tenants_are_isolated(client: httpx.AsyncClient) -> None:
    _, token_a = await create_tenant(client, "a")
    _, token_b = await create_tenant(client, "b")
    created = await client.post("/v1/instances", json={}, headers=bearer(token_a))
    instance_id = created.json()["instance"]["id"]
    assert (
        await client.get(f"/v1/instances/{instance_id}", headers=bearer(token_b))
    ).status_code == 404
    for action in ("start", "stop", "restart"):
        response = await client.post(
            f"/v1/instances/{instance_id}/{action}", headers=bearer(token_b)
        )
        assert response.status_code == 404
    assert (
        await client.delete(f"/v1/instances/{instance_id}", headers=bearer(token_b))
    ).status_code == 404
    assert (
        await client.get(f"/v1/instances/{instance_id}/logs", headers=bearer(token_b))
    ).status_code == 404
    listed = await client.get("/v1/instances", headers=bearer(token_b))
    assert listed.json()["items"] == []
    assert (
        await client.post("/v1/tenants", json={"name": "c"}, headers=bearer(token_b))
    ).status_code == 403
    assert (await client.get("/v1/tenants", headers=bearer(token_b))).json()[0]["name"] == "b"
    mine = await client.get(f"/v1/instances/{instance_id}", headers=bearer(token_a))
    assert mine.json()["desired_state"] == "running"


async def test_actions_follow_the_state_table(client: httpx.AsyncClient) -> None:
    _, token = await create_tenant(client, "acme")
    h = bearer(token)
    instance_id = (await client.post("/v1/instances", json={}, headers=h)).json()["instance"]["id"]
    stop = await client.post(f"/v1/instances/{instance_id}/stop", headers=h)
    assert stop.status_code == 202
    assert stop.json()["instance"]["desired_state"] == "stopped"
    assert stop.json()["instance"]["generation"] == 2
    restart = await client.post(f"/v1/instances/{instance_id}/restart", headers=h)
    assert restart.status_code == 409
    assert restart.json()["code"] == "invalid_transition"
    start = await client.post(f"/v1/instances/{instance_id}/start", headers=h)
    assert start.json()["instance"]["generation"] == 3
    deleted = await client.delete(f"/v1/instances/{instance_id}", headers=h)
    assert deleted.status_code == 202
    assert deleted.json()["instance"]["desired_state"] == "deleted"
    for action in ("start", "stop", "restart"):
        response = await client.post(f"/v1/instances/{instance_id}/{action}", headers=h)
        assert response.status_code == 409, action
    again = await client.delete(f"/v1/instances/{instance_id}", headers=h)
    assert again.status_code == 202
    assert again.json()["instance"]["generation"] == 4
    # The name is free again once the instance is being deleted.
    assert (await client.post("/v1/instances", json={}, headers=h)).status_code == 202


async def test_list_filters_and_paginates(client: httpx.AsyncClient) -> None:
    _, token = await create_tenant(client, "acme")
    h = bearer(token)
    names = [f"i{n}" for n in range(5)]
    for name in names:
        await client.post("/v1/instances", json={"name": name}, headers=h)
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (await client.get("/v1/instances", params=params, headers=h)).json()
        seen += [item["name"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == names
    running = await client.get("/v1/instances", params={"phase": "running"}, headers=h)
    assert running.json()["items"] == []
    bad = await client.get("/v1/instances", params={"cursor": "%%%"}, headers=h)
    assert bad.status_code == 400
    assert (await client.get("/v1/instances", params={"phase": "x"}, headers=h)).status_code == 422
    assert (await client.get("/v1/instances", params={"limit": 0}, headers=h)).status_code == 422


async def test_revoked_and_expired_tokens_are_refused(
    client: httpx.AsyncClient, api_app: object
) -> None:
    tenant_id, token = await create_tenant(client, "acme")
    assert (await client.get("/v1/instances", headers=bearer(token))).status_code == 200
    tokens = (await client.get(f"/v1/tenants/{tenant_id}/tokens")).json()
    assert tokens[0]["prefix"] == token[: len(tokens[0]["prefix"])]
    assert "token" not in tokens[0]
    await client.delete(f"/v1/tokens/{tokens[0]['id']}")
    assert (await client.get("/v1/instances", headers=bearer(token))).status_code == 401

    short = await client.post(
        f"/v1/tenants/{tenant_id}/tokens", json={"name": "s", "expires_in_seconds": 60}
    )
    short_token = short.json()["token"]
    assert (await client.get("/v1/instances", headers=bearer(short_token))).status_code == 200
    engine = api_app.state.ctx.engine  # type: ignore[attr-defined]
    async with engine.begin() as conn:  # as another replica or the CLI would
        await conn.exec_driver_sql(
            "UPDATE api_tokens SET expires_at = now() - interval '1 second' WHERE name = 's'"
        )

    async def refused() -> bool:  # once PostgreSQL's notification arrived
        return (await client.get("/v1/instances", headers=bearer(short_token))).status_code == 401

    await wait_for(refused, timeout=5, interval=0.01)


async def test_verified_tokens_are_cached_until_postgres_says_they_changed(
    client: httpx.AsyncClient, api_app: object
) -> None:
    _, token = await create_tenant(client, "acme")
    tokens = api_app.state.ctx.tokens  # type: ignore[attr-defined]

    async def cached() -> bool:
        # (the new token's own notification may overtake the first lookup, which
        # then is not cached: a later one is)
        assert (await client.get("/v1/instances", headers=bearer(token))).status_code == 200
        return tokens.get(hash_token(token)) is not None

    await wait_for(cached, timeout=5, interval=0.01)
    engine = api_app.state.ctx.engine  # type: ignore[attr-defined]
    async with engine.begin() as conn:  # a change nobody is told about: the cache serves
        await conn.exec_driver_sql("ALTER TABLE api_tokens DISABLE TRIGGER api_tokens_changed")
        await conn.exec_driver_sql("UPDATE api_tokens SET revoked_at = now()")
        await conn.exec_driver_sql("ALTER TABLE api_tokens ENABLE TRIGGER api_tokens_changed")
    assert (await client.get("/v1/instances", headers=bearer(token))).status_code == 200
    async with engine.begin() as conn:  # the trigger tells every replica
        await conn.exec_driver_sql("UPDATE api_tokens SET revoked_at = now()")

    async def refused() -> bool:
        return (await client.get("/v1/instances", headers=bearer(token))).status_code == 401

    await wait_for(refused, timeout=5, interval=0.01)


async def test_openapi_names_every_intent_status(client: httpx.AsyncClient) -> None:
    """Clients (the generated SDK, the CLI) learn the statuses from the schema."""
    spec = (await client.get("/openapi.json")).json()
    status = spec["components"]["schemas"]["IntentRead"]["properties"]["status"]
    if "$ref" in status:
        status = spec["components"]["schemas"][status["$ref"].rsplit("/", 1)[1]]
    assert status["enum"] == ["pending", "in_progress", "succeeded", "failed", "superseded"]


async def test_every_route_but_health_and_docs_needs_a_token(api_app: object) -> None:
    app = api_app
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as anon:
        assert (await anon.get("/healthz")).status_code == 200
        assert (await anon.get("/readyz")).status_code == 200
        assert (await anon.get("/openapi.json")).status_code == 200
        spec = (await anon.get("/openapi.json")).json()
        for path, operations in spec["paths"].items():
            if path in ("/healthz", "/readyz"):
                continue
            for method in operations:
                url = (
                    path.replace("{instance_id}", str(uuid.uuid4()))
                    .replace("{tenant_id}", str(uuid.uuid4()))
                    .replace("{token_id}", str(uuid.uuid4()))
                    .replace("{user_id}", "u")
                )
                response = await anon.request(method.upper(), url, json={})
                assert response.status_code == 401, (method, path, response.status_code)


async def test_405_lists_every_method_of_the_path(client: httpx.AsyncClient) -> None:
    response = await client.request("PATCH", "/v1/instances")
    assert response.status_code == 405
    assert response.headers["content-type"] == "application/problem+json"
    assert {"GET", "POST"} <= set(response.headers["allow"].split(", "))
    one = await client.request("PUT", f"/v1/instances/{uuid.uuid4()}")
    assert {"GET", "DELETE"} <= set(one.headers["allow"].split(", "))


async def test_a_body_that_is_not_utf8_json_is_a_400_problem(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/tenants", content=b"G\xffb\xfe>", headers={"Content-Type": "application/json"}
    )
    assert response.status_code in (400, 422)
    assert response.headers["content-type"] == "application/problem+json"


async def test_idle_settings_on_instances_and_tenants(client: httpx.AsyncClient) -> None:
    tenant_id, token = await create_tenant(client, "acme")
    created = await client.post(
        "/v1/instances",
        json={"name": "a", "idle_timeout_seconds": 600, "wake_on_request": True},
        headers=bearer(token),
    )
    instance = created.json()["instance"]
    assert (instance["idle_timeout_seconds"], instance["wake_on_request"]) == (600, True)
    patched = await client.patch(
        f"/v1/instances/{instance['id']}", json={"idle_timeout_seconds": 0}, headers=bearer(token)
    )
    assert patched.status_code == 200
    assert (patched.json()["idle_timeout_seconds"], patched.json()["wake_on_request"]) == (0, True)
    bad = await client.patch(
        f"/v1/instances/{instance['id']}", json={"idle_timeout_seconds": -1}, headers=bearer(token)
    )
    assert bad.status_code == 422
    tenant = await client.patch(f"/v1/tenants/{tenant_id}", json={"idle_timeout_seconds": 3600})
    assert tenant.json()["idle_timeout_seconds"] == 3600
    as_tenant = await client.patch(
        f"/v1/tenants/{tenant_id}", json={"idle_timeout_seconds": 1}, headers=bearer(token)
    )
    assert as_tenant.status_code == 403
