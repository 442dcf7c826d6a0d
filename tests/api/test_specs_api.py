"""Specs, plans and labels through the API (real PostgreSQL, reconciler off, the fake
runtime's SpecSupport): what is resolved, written, and every refusal."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import insert, select, update

from chroma_orch.db.models import Instance, InstanceUpgrade, Intent, UpgradePhase
from chroma_orch.settings import ReconcilerSettings, SpecsSettings
from tests.api.fake_app import fake_service
from tests.helpers import bearer, create_tenant, settle

RESOLVED_DEFAULT = {
    "cpu": 1024,
    "memory_mib": 1024,
    "architecture": "x86_64",
    "chroma_version": "1.5.9",
    "settings": {},
}
SMALL: dict[str, dict[str, Any]] = {
    "defaults": {"memory_mib": 512, "chroma_version": "1.5.8"},
    "allowed": {"memory_mib": [256, 2048], "chroma_versions": ["1.5.8", "1.5.9"]},
    "quota": {"memory_mib": 2048},
}


@pytest.fixture
async def app_client(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[httpx.AsyncClient, FastAPI]]:
    off = ReconcilerSettings(enabled=False)
    async with fake_service(database_url, tmp_path, monkeypatch, reconciler=off) as (http, app, _):
        yield http, app


@pytest.fixture
def client(app_client: tuple[httpx.AsyncClient, FastAPI]) -> httpx.AsyncClient:
    return app_client[0]


async def _launch(
    client: httpx.AsyncClient, token: str, name: str = "main", **body: Any
) -> httpx.Response:
    return await client.post("/v1/instances", json={"name": name, **body}, headers=bearer(token))


async def _on_plan(client: httpx.AsyncClient, plan: dict[str, Any]) -> tuple[str, str]:
    """A tenant (id, token) on a new plan ``plan``."""
    assert (await client.put("/v1/plans/small", json=plan)).status_code == 200
    tenant_id, token = await create_tenant(client, f"t{uuid.uuid4().hex[:8]}")
    changed = await client.patch(f"/v1/tenants/{tenant_id}", json={"plan": "small"})
    assert changed.status_code == 200, changed.text
    assert changed.json()["plan"] == "small"
    return tenant_id, token


def _refused(response: httpx.Response, code: str, status: int = 422) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["code"] == code, body
    detail: str = body["detail"]
    return detail


async def test_a_launch_gets_the_runtime_defaults_resolved(client: httpx.AsyncClient) -> None:
    _, token = await create_tenant(client, "acme")
    launched = await _launch(client, token, labels={"tier": "gold", "example.com/team": "a"})
    assert launched.status_code == 202, launched.text
    instance = launched.json()["instance"]
    assert instance["spec"] == RESOLVED_DEFAULT
    assert instance["labels"] == {"tier": "gold", "example.com/team": "a"}
    asked = await _launch(client, token, "other", spec={"memory_mib": 4096, "cpu": 2048})
    assert asked.json()["instance"]["spec"]["memory_mib"] == 4096
    got = await client.get(f"/v1/instances/{instance['id']}", headers=bearer(token))
    assert got.json()["spec"] == RESOLVED_DEFAULT


@pytest.mark.parametrize(
    ("spec", "reasons"),
    [
        ({"cpu": 256, "memory_mib": 4096}, ["4096 MiB is not valid with 0.25 vCPU"]),
        ({"chroma_version": "0.4.0"}, ["Chroma 0.4.0 is not available"]),
        ({"memory_mib": 100, "cpu": 300}, ["memory 100 MiB is outside", "300 CPU units"]),
        ({"settings": {"persist_path": "/etc"}}, ["settings.persist_path is not a server setting"]),
        ({"settings": {"max_payload_size_bytes": 1}}, ["settings.max_payload_size_bytes"]),
        ({"architecture": "arm64"}, ["architecture arm64 is not available"]),
    ],
)
async def test_a_spec_the_runtime_cannot_run_is_refused_with_every_reason(
    client: httpx.AsyncClient, spec: dict[str, Any], reasons: list[str]
) -> None:
    _, token = await create_tenant(client, "acme")
    detail = _refused(await _launch(client, token, spec=spec), "invalid_spec")
    for reason in reasons:
        assert reason in detail
    listed = await client.get("/v1/instances", headers=bearer(token))
    assert listed.json()["items"] == []


async def test_malformed_specs_and_labels_are_validation_errors(client: httpx.AsyncClient) -> None:
    _, token = await create_tenant(client, "acme")
    for body in (
        {"spec": {"cpu": "1024"}},
        {"spec": {"memory": 1}},
        {"spec": {"architecture": "sparc"}},
        {"labels": {"-bad": "x"}},
        {"labels": {"ok": "not ok"}},
        {"labels": {"a" * 64: "x"}},
        {"labels": {"k": 1}},
        {"labels": {f"k{i}": "v" for i in range(65)}},
    ):
        _refused(await _launch(client, token, **body), "validation_error")


async def test_the_plan_sets_defaults_ranges_and_refuses_what_it_does_not_allow(
    client: httpx.AsyncClient,
) -> None:
    _, token = await _on_plan(client, SMALL)
    launched = await _launch(client, token)
    assert launched.json()["instance"]["spec"] == {
        **RESOLVED_DEFAULT,
        "memory_mib": 512,
        "chroma_version": "1.5.8",
    }
    detail = _refused(
        await _launch(client, token, "big", spec={"memory_mib": 4096}), "invalid_spec"
    )
    assert "memory_mib 4096 MiB is outside the plan's range [256, 2048]" in detail
    strict = {**SMALL, "allowed": {**SMALL["allowed"], "settings": ["allow_reset"]}}
    assert (await client.put("/v1/plans/small", json=strict)).status_code == 200
    detail = _refused(
        await _launch(client, token, "s", spec={"settings": {"max_payload_size_bytes": 4096}}),
        "invalid_spec",
    )
    assert "settings.max_payload_size_bytes is not a setting the plan lets" in detail
    ok = await _launch(client, token, "r", spec={"settings": {"allow_reset": True}})
    assert ok.status_code == 202, ok.text


async def test_the_default_plan_comes_from_settings(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    specs = SpecsSettings(memory_mib=2048, allowed_chroma_versions=["1.5.9"], quota_memory_mib=3000)
    off = ReconcilerSettings(enabled=False)
    async with fake_service(database_url, tmp_path, monkeypatch, reconciler=off, specs=specs) as (
        client,
        _,
        _,
    ):
        _, token = await create_tenant(client, "acme")
        launched = await _launch(client, token)
        assert launched.json()["instance"]["spec"]["memory_mib"] == 2048
        old = await _launch(
            client, token, "old", spec={"chroma_version": "1.5.8", "memory_mib": 256}
        )
        assert "Chroma 1.5.8 is not in the plan" in _refused(old, "invalid_spec")
        _refused(await _launch(client, token, "more"), "quota_exceeded", 429)
        seeded = await client.post("/launch", json={"user_id": "bob"})
        assert seeded.json()["spec"]["memory_mib"] == 2048


async def test_the_quota_counts_live_instances_on_launch_and_on_change(
    client: httpx.AsyncClient,
) -> None:
    _, token = await _on_plan(client, SMALL)
    first = (await _launch(client, token, "a", spec={"memory_mib": 1024})).json()["instance"]
    assert (await _launch(client, token, "b", spec={"memory_mib": 1024})).status_code == 202
    detail = _refused(
        await _launch(client, token, "c", spec={"memory_mib": 256}), "quota_exceeded", 429
    )
    assert "2304 MiB of memory" in detail
    assert "quota is 2048" in detail
    patched = await client.patch(
        f"/v1/instances/{first['id']}", json={"spec": {"memory_mib": 2048}}, headers=bearer(token)
    )
    _refused(patched, "quota_exceeded", 429)
    down = await client.patch(
        f"/v1/instances/{first['id']}", json={"spec": {"memory_mib": 512}}, headers=bearer(token)
    )
    assert down.status_code == 200, down.text  # its own memory is not counted twice
    assert (await _launch(client, token, "c", spec={"memory_mib": 512})).status_code == 202
    deleted = await client.delete(f"/v1/instances/{first['id']}", headers=bearer(token))
    assert deleted.status_code == 202
    assert (await _launch(client, token, "d", spec={"memory_mib": 512})).status_code == 202


async def test_launches_and_a_spec_change_at_once_never_overrun_the_quota(
    client: httpx.AsyncClient,
) -> None:
    """Each launch counts what the tenant's others committed before it: the statement
    that writes it takes the tenant's spec lock, then counts (a count in the
    statement's own snapshot, taken before the wait, would let them all in)."""
    _, token = await _on_plan(client, SMALL)  # quota: 2048 MiB
    first = (await _launch(client, token, "a", spec={"memory_mib": 512})).json()["instance"]
    grow = client.patch(
        f"/v1/instances/{first['id']}", json={"spec": {"memory_mib": 1024}}, headers=bearer(token)
    )
    launches = [_launch(client, token, f"n{k}", spec={"memory_mib": 512}) for k in range(8)]
    answers = await asyncio.gather(grow, *launches)
    assert {a.status_code for a in answers} <= {200, 202, 429}, [a.text for a in answers]
    assert sum(a.status_code == 429 for a in answers) >= 5  # room for three at most
    listed = await client.get("/v1/instances", headers=bearer(token))
    live = [i["spec"]["memory_mib"] for i in listed.json()["items"]]
    assert sum(live) <= 2048, live


async def test_plans_crud_and_a_plan_in_use_cannot_be_deleted(client: httpx.AsyncClient) -> None:
    tenant_id, token = await _on_plan(client, SMALL)
    got = await client.get("/v1/plans/small")
    assert got.status_code == 200
    assert got.json()["tenants"] == 1
    assert got.json()["definition"]["quota"] == {"cpu": None, "memory_mib": 2048}
    assert [p["name"] for p in (await client.get("/v1/plans")).json()] == ["small"]
    _refused(await client.delete("/v1/plans/small"), "plan_in_use", 409)
    assert (await client.get(f"/v1/tenants/{tenant_id}")).json()["plan"] == "small"
    missing = await client.patch(f"/v1/tenants/{tenant_id}", json={"plan": "nope"})
    _refused(missing, "not_found", 404)
    back = await client.patch(f"/v1/tenants/{tenant_id}", json={"plan": None})
    assert back.json()["plan"] is None
    assert (await client.delete("/v1/plans/small")).status_code == 204
    _refused(await client.get("/v1/plans/small"), "not_found", 404)
    _refused(await client.get("/v1/plans", headers=bearer(token)), "forbidden", 403)
    bad = {"allowed": {"memory_mib": [2048, 256]}}
    _refused(await client.put("/v1/plans/bad", json=bad), "validation_error")
    _refused(await client.put("/v1/plans/bad", json={"extra": 1}), "validation_error")


async def _intents(app: FastAPI, instance_id: str) -> list[tuple[str, int]]:
    async with app.state.ctx.engine.connect() as conn:
        rows = await conn.execute(
            select(Intent.action, Intent.target_generation)
            .where(Intent.instance_id == uuid.UUID(instance_id))
            .order_by(Intent.created_at)
        )
        return [(action, generation) for action, generation in rows.all()]


async def _row(app: FastAPI, instance_id: str) -> Instance:
    async with app.state.ctx.sessions() as session:
        row: Instance = await session.get_one(Instance, uuid.UUID(instance_id))
        return row


async def test_a_spec_change_of_a_running_instance_is_a_restart_at_a_new_generation(
    app_client: tuple[httpx.AsyncClient, FastAPI],
) -> None:
    client, app = app_client
    _, token = await create_tenant(client, "acme")
    instance = (await _launch(client, token)).json()["instance"]
    await settle(app.state.ctx.engine, instance["id"], "running")
    url = f"/v1/instances/{instance['id']}"
    changed = await client.patch(
        url, json={"spec": {"memory_mib": 2048, "settings": {"allow_reset": True}}},
        headers=bearer(token),
    )  # fmt: skip
    assert changed.status_code == 200, changed.text
    body = changed.json()
    assert body["generation"] == 2
    assert body["spec"] == {
        **RESOLVED_DEFAULT,
        "memory_mib": 2048,
        "settings": {"allow_reset": True},
    }
    row = await _row(app, instance["id"])
    assert (row.restart_generation, row.desired_state) == (2, "running")
    assert row.next_reconcile_at is not None
    assert await _intents(app, instance["id"]) == [("create", 1), ("reconfigure", 2)]
    for same in ({"memory_mib": 2048}, {}, {"settings": {"allow_reset": True}}):
        again = await client.patch(url, json={"spec": same}, headers=bearer(token))
        assert again.json()["generation"] == 2  # nothing changes: no new generation
    assert len(await _intents(app, instance["id"])) == 2
    removed = await client.patch(
        url, json={"spec": {"settings": {"allow_reset": None}}}, headers=bearer(token)
    )
    assert removed.json()["spec"]["settings"] == {}
    assert removed.json()["generation"] == 3


async def test_a_spec_change_of_a_stopped_instance_waits_for_its_next_start(
    app_client: tuple[httpx.AsyncClient, FastAPI],
) -> None:
    client, app = app_client
    _, token = await create_tenant(client, "acme")
    instance = (await _launch(client, token)).json()["instance"]
    url = f"/v1/instances/{instance['id']}"
    await client.post(f"{url}/stop", headers=bearer(token))
    await settle(app.state.ctx.engine, instance["id"], "stopped")
    changed = await client.patch(
        url, json={"spec": {"chroma_version": "1.5.8"}}, headers=bearer(token)
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["generation"] == 3
    assert changed.json()["desired_state"] == "stopped"
    row = await _row(app, instance["id"])
    assert row.restart_generation == 0
    assert row.spec["chroma_version"] == "1.5.8"


async def test_a_spec_change_during_an_upgrade_is_refused(
    app_client: tuple[httpx.AsyncClient, FastAPI],
) -> None:
    client, app = app_client
    tenant_id, token = await create_tenant(client, "acme")
    instance = (await _launch(client, token)).json()["instance"]
    upgrade_id = uuid.uuid4()
    async with app.state.ctx.engine.begin() as conn:
        await conn.execute(
            insert(InstanceUpgrade).values(
                id=upgrade_id,
                instance_id=uuid.UUID(instance["id"]),
                tenant_id=uuid.UUID(tenant_id),
                phase=UpgradePhase.UPGRADING.value,
                from_spec=instance["spec"],
                to_spec={**instance["spec"], "chroma_version": "1.5.8"},
            )
        )
        await conn.execute(
            update(Instance)
            .where(Instance.id == uuid.UUID(instance["id"]))
            .values(upgrade_id=upgrade_id)
        )
    url = f"/v1/instances/{instance['id']}"
    refused = await client.patch(url, json={"spec": {"memory_mib": 512}}, headers=bearer(token))
    assert str(upgrade_id) in _refused(refused, "upgrade_in_progress", 409)
    assert (await _row(app, instance["id"])).generation == 1
    labels = await client.patch(url, json={"labels": {"a": "b"}}, headers=bearer(token))
    assert labels.json()["labels"] == {"a": "b"}  # labels are not the spec


async def test_labels_are_replaced_whole_and_validated(client: httpx.AsyncClient) -> None:
    _, token = await create_tenant(client, "acme")
    instance = (await _launch(client, token, labels={"a": "1", "b": "2"})).json()["instance"]
    url = f"/v1/instances/{instance['id']}"
    changed = await client.patch(url, json={"labels": {"c": ""}}, headers=bearer(token))
    assert changed.json()["labels"] == {"c": ""}
    assert changed.json()["generation"] == 1
    _refused(await client.patch(url, json={"labels": {"a/b/c": "x"}}, headers=bearer(token)),
             "validation_error")  # fmt: skip
    kept = await client.patch(url, json={"idle_timeout_seconds": 60}, headers=bearer(token))
    assert kept.json()["labels"] == {"c": ""}


async def test_an_undelete_needs_room_in_the_quota(
    app_client: tuple[httpx.AsyncClient, FastAPI],
) -> None:
    client, app = app_client
    _, token = await _on_plan(client, SMALL)
    first = (await _launch(client, token, "a", spec={"memory_mib": 2048})).json()["instance"]
    assert (await client.delete(f"/v1/instances/{first['id']}", headers=bearer(token))).is_success
    await settle(app.state.ctx.engine, first["id"], "deleted")
    assert (await _launch(client, token, "b", spec={"memory_mib": 1024})).status_code == 202
    undelete = await client.post(f"/v1/instances/{first['id']}/undelete", headers=bearer(token))
    assert "3072 MiB of memory" in _refused(undelete, "quota_exceeded", 429)
