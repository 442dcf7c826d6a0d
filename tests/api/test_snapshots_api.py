"""The /v1 snapshot API against real PostgreSQL, reconciler off: what it writes and
what it refuses (and that a refusal changes nothing)."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import func, insert, select, update

from chroma_orch.db.models import Event, Instance, InstanceUpgrade, Snapshot
from chroma_orch.domain.snapshots import SnapshotPolicy
from tests.helpers import bearer, create_tenant


async def _instance(client: httpx.AsyncClient, token: str, name: str = "main") -> str:
    created = await client.post("/v1/instances", json={"name": name}, headers=bearer(token))
    instance_id: str = created.json()["instance"]["id"]
    return instance_id


async def _mark(app: FastAPI, snapshot_id: str, **values: Any) -> None:
    async with app.state.ctx.engine.begin() as conn:
        await conn.execute(
            update(Snapshot).where(Snapshot.id == uuid.UUID(snapshot_id)).values(**values)
        )


async def _snapshot_count(app: FastAPI) -> int:
    async with app.state.ctx.engine.connect() as conn:
        return await conn.scalar(select(func.count()).select_from(Snapshot)) or 0


async def test_snapshot_request_is_pending_listed_and_evented(
    client: httpx.AsyncClient, api_app: FastAPI
) -> None:
    _, token = await create_tenant(client, "acme")
    instance_id = await _instance(client, token)
    async with api_app.state.ctx.engine.begin() as conn:  # not due: only the request makes it
        await conn.execute(update(Instance).values(next_reconcile_at=None))
    created = await client.post(f"/v1/instances/{instance_id}/snapshots", headers=bearer(token))
    assert created.status_code == 202, created.text
    body = created.json()
    assert body["phase"] == "pending"
    assert body["kind"] == "manual"
    assert body["instance_id"] == instance_id
    assert body["store"] == "local"
    got = await client.get(f"/v1/snapshots/{body['id']}", headers=bearer(token))
    assert got.json() == body
    listed = await client.get(f"/v1/instances/{instance_id}/snapshots", headers=bearer(token))
    assert [s["id"] for s in listed.json()["items"]] == [body["id"]]
    async with api_app.state.ctx.engine.connect() as conn:
        due = await conn.scalar(select(Instance.next_reconcile_at))
        types = list(await conn.scalars(select(Event.type).order_by(Event.seq)))
    assert due is not None
    assert "snapshot.created" in types


async def test_foreign_and_unknown_snapshots_are_not_found(
    client: httpx.AsyncClient, api_app: FastAPI
) -> None:
    _, owner = await create_tenant(client, "acme")
    _, other = await create_tenant(client, "other")
    instance_id = await _instance(client, owner)
    theirs = await _instance(client, other)
    snapshot = (
        await client.post(f"/v1/instances/{instance_id}/snapshots", headers=bearer(owner))
    ).json()
    await _mark(api_app, snapshot["id"], phase="ready", location="x")
    before = await _snapshot_count(api_app)
    for method, path, body in [
        ("POST", f"/v1/instances/{instance_id}/snapshots", None),
        ("GET", f"/v1/instances/{instance_id}/snapshots", None),
        ("GET", f"/v1/snapshots/{snapshot['id']}", None),
        ("DELETE", f"/v1/snapshots/{snapshot['id']}", None),
        ("POST", f"/v1/instances/{theirs}/restore", {"snapshot_id": snapshot["id"]}),
        ("POST", "/v1/instances", {"name": "stolen", "from_snapshot": snapshot["id"]}),
        ("GET", f"/v1/snapshots/{uuid.uuid4()}", None),
    ]:
        response = await client.request(method, path, json=body, headers=bearer(other))
        assert response.status_code == 404, (method, path, response.text)
        assert response.headers["content-type"] == "application/problem+json"
    assert await _snapshot_count(api_app) == before
    # an admin may clone across tenants
    admin_clone = await client.post(
        "/v1/instances",
        json={"name": "copy", "tenant_id": (await client.get("/v1/tenants")).json()[1]["id"],
              "from_snapshot": snapshot["id"]},
    )  # fmt: skip
    assert admin_clone.status_code == 202, admin_clone.text


async def test_a_deleted_instance_takes_no_snapshot(client: httpx.AsyncClient) -> None:
    _, token = await create_tenant(client, "acme")
    instance_id = await _instance(client, token)
    await client.delete(f"/v1/instances/{instance_id}", headers=bearer(token))
    # still being deleted (no reconciler here): already gone as far as snapshots go
    response = await client.post(f"/v1/instances/{instance_id}/snapshots", headers=bearer(token))
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


async def test_restore_needs_a_ready_snapshot_and_writes_one_intent(
    client: httpx.AsyncClient, api_app: FastAPI
) -> None:
    _, token = await create_tenant(client, "acme")
    instance_id = await _instance(client, token)
    snapshot = (
        await client.post(f"/v1/instances/{instance_id}/snapshots", headers=bearer(token))
    ).json()
    restore = f"/v1/instances/{instance_id}/restore"
    early = await client.post(restore, json={"snapshot_id": snapshot["id"]}, headers=bearer(token))
    assert early.status_code == 409
    assert "ready" in early.json()["detail"]
    await _mark(api_app, snapshot["id"], phase="ready", location="x")
    accepted = await client.post(
        restore, json={"snapshot_id": snapshot["id"]}, headers=bearer(token)
    )
    assert accepted.status_code == 202, accepted.text
    assert accepted.json()["intent"]["action"] == "restore"
    assert accepted.json()["instance"]["generation"] == 2
    kinds = [
        s["kind"]
        for s in (
            await client.get(f"/v1/instances/{instance_id}/snapshots", headers=bearer(token))
        ).json()["items"]
    ]
    assert sorted(kinds) == ["manual", "pre_restore"]
    twice = await client.post(restore, json={"snapshot_id": snapshot["id"]}, headers=bearer(token))
    assert twice.status_code == 409
    named = await client.delete(f"/v1/snapshots/{snapshot['id']}", headers=bearer(token))
    assert named.status_code == 409  # a restore still needs it


async def test_bad_input_is_a_problem_and_changes_nothing(
    client: httpx.AsyncClient, api_app: FastAPI
) -> None:
    _, token = await create_tenant(client, "acme")
    instance_id = await _instance(client, token)
    before = await _snapshot_count(api_app)
    for method, path, body in [
        ("GET", "/v1/snapshots/not-a-uuid", None),
        ("POST", f"/v1/instances/{instance_id}/restore", {"snapshot_id": "nope"}),
        ("POST", f"/v1/instances/{instance_id}/restore", {}),
        ("POST", f"/v1/instances/{instance_id}/restore", {"snapshot_id": str(uuid.uuid4()),
                                                          "extra": 1}),
        ("POST", "/v1/instances", {"name": "x", "from_snapshot": 12}),
    ]:  # fmt: skip
        response = await client.request(method, path, json=body, headers=bearer(token))
        assert response.status_code == 422, (path, response.text)
        assert response.headers["content-type"] == "application/problem+json"
    assert await _snapshot_count(api_app) == before


async def test_pending_snapshot_cannot_be_deleted_but_a_ready_one_is_marked(
    client: httpx.AsyncClient, api_app: FastAPI
) -> None:
    _, token = await create_tenant(client, "acme")
    instance_id = await _instance(client, token)
    snapshot = (
        await client.post(f"/v1/instances/{instance_id}/snapshots", headers=bearer(token))
    ).json()
    path = f"/v1/snapshots/{snapshot['id']}"
    assert (await client.delete(path, headers=bearer(token))).status_code == 409
    await _mark(api_app, snapshot["id"], phase="ready", location="x")
    for _ in range(2):  # repeatable
        deleted = await client.delete(path, headers=bearer(token))
        assert deleted.status_code == 202
        assert deleted.json()["phase"] == "deleting"


async def test_the_snapshot_an_open_upgrade_would_restore_cannot_be_deleted(
    client: httpx.AsyncClient, api_app: FastAPI
) -> None:
    """A rollback restores the ``pre_upgrade`` snapshot: deleting it while the upgrade
    probes would leave a failed upgrade with nothing to roll back to."""
    _, token = await create_tenant(client, "acme")
    instance_id = await _instance(client, token)
    snapshot = (
        await client.post(f"/v1/instances/{instance_id}/snapshots", headers=bearer(token))
    ).json()
    await _mark(api_app, snapshot["id"], phase="ready", location="x", kind="pre_upgrade")
    async with api_app.state.ctx.engine.begin() as conn:
        tenant_id = await conn.scalar(
            select(Instance.tenant_id).where(Instance.id == uuid.UUID(instance_id))
        )
        upgrade_id = await conn.scalar(
            insert(InstanceUpgrade)
            .values(
                instance_id=uuid.UUID(instance_id),
                tenant_id=tenant_id,
                phase="probing",
                from_spec={},
                to_spec={},
                snapshot_id=uuid.UUID(snapshot["id"]),
            )
            .returning(InstanceUpgrade.id)
        )
    path = f"/v1/snapshots/{snapshot['id']}"
    refused = await client.delete(path, headers=bearer(token))
    assert refused.status_code == 409, refused.text
    assert f"upgrade {upgrade_id} is under way" in refused.json()["detail"]
    got = await client.get(path, headers=bearer(token))
    assert got.json()["phase"] == "ready"
    async with api_app.state.ctx.engine.begin() as conn:  # once it ended, it may go
        await conn.execute(update(InstanceUpgrade).values(phase="succeeded"))
    assert (await client.delete(path, headers=bearer(token))).status_code == 202


async def test_quota_refuses_manual_snapshots_but_not_safety_ones(
    client: httpx.AsyncClient, api_app: FastAPI
) -> None:
    api_app.state.ctx.snapshot_policy = SnapshotPolicy("local", 2, 10**12)
    _, token = await create_tenant(client, "acme")
    instance_id = await _instance(client, token)
    path = f"/v1/instances/{instance_id}/snapshots"
    ids = [(await client.post(path, headers=bearer(token))).json()["id"] for _ in range(2)]
    refused = await client.post(path, headers=bearer(token))
    assert refused.status_code == 429
    assert refused.json()["code"] == "quota_exceeded"
    assert await _snapshot_count(api_app) == 2
    await _mark(api_app, ids[0], phase="ready", location="x", size_bytes=10)
    restore = await client.post(
        f"/v1/instances/{instance_id}/restore", json={"snapshot_id": ids[0]}, headers=bearer(token)
    )
    assert restore.status_code == 202  # its pre_restore snapshot is taken past the quota
    assert await _snapshot_count(api_app) == 3
    api_app.state.ctx.snapshot_policy = SnapshotPolicy("local", 100, 10)
    by_bytes = await client.post(path, headers=bearer(token))
    assert by_bytes.status_code == 429
    assert "bytes" in by_bytes.json()["detail"]
