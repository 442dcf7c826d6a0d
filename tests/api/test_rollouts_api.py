"""The rollouts API against real PostgreSQL (no reconciler, no rollout loop: what the
requests write): validation, selection and waves, admin only, pause/resume/cancel."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update

from chroma_orch.context import AppContext
from chroma_orch.db.models import Instance, RolloutMember
from chroma_orch.domain.rollouts import assign_waves
from chroma_orch.events.queries import Scope, read_events
from tests.helpers import bearer, create_tenant


@pytest.fixture
def ctx(api_app: Any) -> AppContext:
    context: AppContext = api_app.state.ctx
    return context


async def _launch(client: httpx.AsyncClient, token: str, name: str) -> str:
    response = await client.post("/v1/instances", json={"name": name}, headers=bearer(token))
    assert response.status_code == 202, response.text
    instance_id: str = response.json()["instance"]["id"]
    return instance_id


async def _set(ctx: AppContext, instance_id: str, **values: Any) -> None:
    async with ctx.engine.begin() as conn:
        await conn.execute(
            update(Instance).where(Instance.id == uuid.UUID(instance_id)).values(**values)
        )


def test_waves_take_the_ceiling_of_each_percentage() -> None:
    assert assign_waves(10, [1, 10, 100]) == [0] + [2] * 9  # wave 1 (10 %) adds nobody
    assert assign_waves(4, [50, 100]) == [0, 0, 1, 1]
    assert assign_waves(3, [1, 50, 100]) == [0, 1, 2]
    assert assign_waves(0, [100]) == []
    assert assign_waves(200, [1, 10, 100]).count(0) == 2


@pytest.mark.parametrize(
    "body",
    [
        {"waves": [10, 5, 100]},
        {"waves": [10, 10, 100]},
        {"waves": [10, 50]},
        {"waves": [0, 100]},
        {"waves": [50, 101]},
        {"waves": []},
        {"pause_seconds": -1},
        {"error_budget": -1},
        {"max_concurrent": 0},
        {"max_concurrent": "2"},
        {"error_budget": False},
        {"waves": [True, 100]},
        {"waves": [10.5, 100]},
        {"selector": {"tenant": "x"}},
        {"selector": {"labels": {"tier": 1}}},
        {"surprise": True},
    ],
)
async def test_bad_requests_are_422(client: httpx.AsyncClient, body: dict[str, Any]) -> None:
    for path, base in (("/v1/restarts", {}), ("/v1/upgrades", {"chroma_version": "1.5.9"})):
        response = await client.post(path, json=base | body)
        assert response.status_code == 422, (path, body, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
        assert response.json()["code"] == "validation_error"


async def test_an_upgrade_names_its_version(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/upgrades", json={"waves": [100]})
    assert response.status_code == 422
    response = await client.post("/v1/upgrades", json={"chroma_version": ""})
    assert response.status_code == 422


async def test_members_are_the_live_matching_instances_in_waves(
    client: httpx.AsyncClient, ctx: AppContext
) -> None:
    acme_id, acme = await create_tenant(client, "acme")
    _, other = await create_tenant(client, "other")
    ids = [await _launch(client, acme, f"a{i}") for i in range(5)]
    elsewhere = await _launch(client, other, "b")
    await _set(ctx, ids[0], labels={"tier": "free", "zone": "1"})
    await _set(ctx, ids[1], labels={"tier": "free"})
    await _set(ctx, ids[2], labels={"tier": "paid"}, spec={"chroma_version": "1.0.0"})
    gone = await client.delete(f"/v1/instances/{ids[3]}", headers=bearer(acme))
    assert gone.status_code == 202

    body = {"selector": {"tenant_ids": [acme_id]}, "waves": [25, 50, 100]}
    created = await client.post("/v1/restarts", json=body)
    assert created.status_code == 202, created.text
    rollout = created.json()
    assert rollout["kind"] == "restart"
    assert rollout["state"] == "pending"
    assert rollout["members"] == 4  # the deleted one and the other tenant's are not
    assert [w["members"] for w in rollout["waves"]] == [1, 1, 2]
    assert all(w["counts"]["waiting"] == w["members"] for w in rollout["waves"])
    members = (await client.get(f"/v1/rollouts/{rollout['id']}/members")).json()
    assert {m["instance_id"] for m in members} == {ids[0], ids[1], ids[2], ids[4]}
    assert elsewhere not in {m["instance_id"] for m in members}

    again = (await client.post("/v1/restarts", json=body)).json()
    again_members = (await client.get(f"/v1/rollouts/{again['id']}/members")).json()
    assert [(m["instance_id"], m["wave"]) for m in again_members] == [
        (m["instance_id"], m["wave"]) for m in members
    ]  # the same selection gets the same waves

    labelled = (
        await client.post("/v1/restarts", json={"selector": {"labels": {"tier": "free"}}})
    ).json()
    assert labelled["members"] == 2
    both = {"labels": {"tier": "free", "zone": "1"}}
    assert (await client.post("/v1/restarts", json={"selector": both})).json()["members"] == 1
    versioned = {"selector": {"chroma_versions": ["1.0.0"]}, "chroma_version": "1.5.9"}
    upgrade = (await client.post("/v1/upgrades", json=versioned)).json()
    assert upgrade["kind"] == "upgrade"
    assert upgrade["members"] == 1
    assert upgrade["request"]["chroma_version"] == "1.5.9"

    listed = (await client.get("/v1/rollouts")).json()
    assert [r["id"] for r in listed][0] == upgrade["id"]  # newest first
    assert len(listed) == 5


async def test_tenants_cannot_see_or_touch_rollouts(client: httpx.AsyncClient) -> None:
    _, token = await create_tenant(client, "acme")
    await _launch(client, token, "main")
    rollout = (await client.post("/v1/restarts", json={})).json()
    auth = bearer(token)
    for method, path, body in (
        ("POST", "/v1/restarts", {}),
        ("POST", "/v1/upgrades", {"chroma_version": "1.5.9"}),
        ("GET", "/v1/rollouts", None),
        ("GET", f"/v1/rollouts/{rollout['id']}", None),
        ("GET", f"/v1/rollouts/{rollout['id']}/members", None),
        ("POST", f"/v1/rollouts/{rollout['id']}/pause", None),
        ("POST", f"/v1/rollouts/{rollout['id']}/cancel", None),
    ):
        response = await client.request(method, path, json=body, headers=auth)
        assert response.status_code == 403, (method, path, response.text)
        assert response.json()["code"] == "forbidden"
    assert (await client.get(f"/v1/rollouts/{rollout['id']}")).json()["state"] == "pending"


async def test_rollout_events_reach_admins_only(client: httpx.AsyncClient, ctx: AppContext) -> None:
    tenant_id, token = await create_tenant(client, "acme")
    await _launch(client, token, "main")
    rollout = (await client.post("/v1/restarts", json={})).json()
    async with ctx.sessions() as session:
        admin = await read_events(session, 0, 1000, scope=Scope(None))
        tenant = await read_events(session, 0, 1000, scope=Scope(uuid.UUID(tenant_id)))
    created = [e for e in admin if e.type == "rollout.created"]
    assert len(created) == 1
    assert created[0].tenant_id is None
    assert created[0].after is not None
    assert created[0].after["rollout_id"] == rollout["id"]
    assert created[0].after["waves"] == [1]
    assert not [e for e in tenant if e.type.startswith("rollout.")]
    assert [e for e in tenant if e.type == "instance.created"]  # the tenant sees its own
    assert not Scope(uuid.UUID(tenant_id)).sees(None, None)


async def test_pause_resume_cancel(client: httpx.AsyncClient, ctx: AppContext) -> None:
    _, token = await create_tenant(client, "acme")
    for i in range(3):
        await _launch(client, token, f"i{i}")
    rollout = (await client.post("/v1/restarts", json={"waves": [50, 100]})).json()
    base = f"/v1/rollouts/{rollout['id']}"

    resumed = await client.post(f"{base}/resume")
    assert resumed.status_code == 409
    assert resumed.json()["code"] == "invalid_transition"
    assert "pending" in resumed.json()["detail"]
    paused = await client.post(f"{base}/pause")
    assert paused.status_code == 200
    assert paused.json()["state"] == "paused"
    assert paused.json()["next_step_at"] is None
    assert (await client.post(f"{base}/pause")).status_code == 409
    resumed = await client.post(f"{base}/resume")
    assert resumed.status_code == 200
    assert resumed.json()["state"] == "running"
    cancelled = await client.post(f"{base}/cancel")
    assert cancelled.status_code == 200, cancelled.text
    body = cancelled.json()
    assert body["state"] == "cancelled"
    assert body["completed_at"] is not None
    assert sum(w["counts"]["skipped"] for w in body["waves"]) == 3
    for action in ("pause", "resume", "cancel"):
        again = await client.post(f"{base}/{action}")
        assert again.status_code == 409, action
    async with ctx.sessions() as session:
        states = set(
            await session.scalars(
                select(RolloutMember.state).where(
                    RolloutMember.rollout_id == uuid.UUID(rollout["id"])
                )
            )
        )
        events = await read_events(session, 0, 1000, scope=Scope(None))
    assert states == {"skipped"}
    changes = [e.after for e in events if e.type == "rollout.state_changed"]
    assert [(c or {})["state"] for c in changes] == ["paused", "running", "cancelled"]

    missing = await client.post(f"/v1/rollouts/{uuid.uuid4()}/pause")
    assert missing.status_code == 404
    assert missing.json()["code"] == "not_found"
    assert (await client.get(f"/v1/rollouts/{uuid.uuid4()}")).status_code == 404
    assert (await client.get("/v1/rollouts/not-a-uuid")).status_code == 422
    assert (await client.get("/v1/rollouts?state=bogus")).status_code == 422
