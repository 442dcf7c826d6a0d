"""The retention pass: what is past retention goes, in batches, one replica at a time."""

from __future__ import annotations

import uuid

import httpx
from fastapi import FastAPI
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from chroma_orch.db.locks import LockKey
from chroma_orch.db.models import Event, Instance, Intent
from chroma_orch.db.retention import Retention
from chroma_orch.settings import RetentionSettings
from tests.helpers import bearer, create_tenant, settle, wait_for

_OLD = "now() - interval '400 hours'"
_PURGE = {"purge": "true"}
NOTHING = {"snapshots": 0, "events": 0, "intents": 0, "instances": 0, "released_endpoints": 0}


async def _backdate(engine: AsyncEngine, instance_id: str) -> None:
    """Everything about the instance happened 400 hours ago."""
    async with engine.begin() as conn:
        for statement in (
            f"UPDATE instances SET phase_changed_at = {_OLD}, created_at = {_OLD} WHERE id = :id",
            f"UPDATE intents SET created_at = {_OLD}, completed_at = "
            f"CASE WHEN completed_at IS NULL THEN NULL ELSE {_OLD} END WHERE instance_id = :id",
            f"UPDATE events SET created_at = {_OLD} WHERE instance_id = :id",
        ):
            await conn.execute(text(statement), {"id": uuid.UUID(instance_id)})


async def _launch(client: httpx.AsyncClient, token: str, name: str) -> str:
    created = await client.post("/v1/instances", json={"name": name}, headers=bearer(token))
    return str(created.json()["instance"]["id"])


async def _remaining(engine: AsyncEngine) -> tuple[set[str], dict[str, list[str]], set[str]]:
    """Instance ids; intents' statuses by instance id; instance ids named by events."""
    async with engine.connect() as conn:
        instances = {str(i) for i in await conn.scalars(select(Instance.id))}
        intents: dict[str, list[str]] = {}
        for instance_id, status in await conn.execute(
            select(Intent.instance_id, Intent.status).order_by(Intent.created_at)
        ):
            intents.setdefault(str(instance_id), []).append(status)
        named = await conn.scalars(select(Event.instance_id).where(Event.instance_id.is_not(None)))
        return instances, intents, {str(i) for i in named}


async def test_purges_deleted_instances_and_settled_intents_past_retention(
    client: httpx.AsyncClient, api_app: FastAPI
) -> None:
    engine: AsyncEngine = api_app.state.ctx.engine
    _, token = await create_tenant(client, "acme")
    gone, recent, live, fresh = [await _launch(client, token, n) for n in ("a", "b", "c", "d")]
    for deleted in (gone, recent):  # purged: no snapshot (tests/reconciler/test_undelete.py)
        await client.delete(f"/v1/instances/{deleted}", params=_PURGE, headers=bearer(token))
        await settle(engine, deleted, "deleted")
    await settle(engine, live, "running")
    await settle(engine, fresh, "running")
    await _backdate(engine, gone)
    await _backdate(engine, live)  # running for long: its settled create intent goes
    await client.post(f"/v1/instances/{live}/stop", headers=bearer(token))
    await _backdate(engine, live)  # and a stop that has waited as long stays: it is open

    retention = Retention(api_app.state.ctx.sessions, RetentionSettings(batch=1), 168)
    purged = await retention.run_once()

    instances, intents, named = await _remaining(engine)
    assert instances == {recent, live, fresh}
    assert intents == {
        recent: ["succeeded", "succeeded"],  # its create and delete, settled lately
        live: ["pending"],
        fresh: ["succeeded"],
    }
    assert gone not in named
    assert {recent, live, fresh} <= named
    assert purged["instances"] == 1
    assert purged["intents"] == 3  # gone's create and delete, live's create
    assert purged["events"] >= 2
    assert await retention.run_once() == NOTHING


async def test_one_replica_purges_at_a_time(client: httpx.AsyncClient, api_app: FastAPI) -> None:
    engine: AsyncEngine = api_app.state.ctx.engine
    _, token = await create_tenant(client, "acme")
    gone = await _launch(client, token, "a")
    await client.delete(f"/v1/instances/{gone}", params=_PURGE, headers=bearer(token))
    await settle(engine, gone, "deleted")
    await _backdate(engine, gone)
    retention = Retention(api_app.state.ctx.sessions, RetentionSettings(), 168)
    async with engine.connect() as other_replica:
        await other_replica.execute(select(func.pg_advisory_lock(LockKey.RETENTION)))
        assert await retention.run_once() == NOTHING
        await other_replica.execute(select(func.pg_advisory_unlock(LockKey.RETENTION)))
    assert (await retention.run_once())["instances"] == 1


async def test_released_addresses_older_than_any_quarantine_go(api_app: FastAPI) -> None:
    """Released addresses are kept an hour (the longest quarantine), then purged:
    ECS task IPs seldom repeat, so nothing else would ever drop them."""
    engine: AsyncEngine = api_app.state.ctx.engine
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO released_endpoints (host, port, instance_id, released_at) VALUES "
                "('10.0.0.7', 8000, gen_random_uuid(), now() - interval '2 hours'), "
                "('10.0.0.8', 8000, gen_random_uuid(), now() - interval '59 minutes')"
            )
        )
    retention = Retention(api_app.state.ctx.sessions, RetentionSettings(batch=1), 168)

    async def hosts_left() -> list[str] | None:
        await retention.run_once()  # (or the app's own pass, holding the lock meanwhile)
        async with engine.connect() as conn:
            left = list(await conn.scalars(text("SELECT host FROM released_endpoints")))
        return left if "10.0.0.7" not in left else None

    assert await wait_for(hosts_left, timeout=10, interval=0.2) == ["10.0.0.8"]
