"""GET /v1/fleet: counts, the start-time histogram, recent failures, bad input, auth;
and the plans of its reads at 10,000 instances and ~50,000 events."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import insert, select, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql.expression import ClauseElement

from chroma_orch.db.fleet import counts_statement, failures_statement, start_times_statement
from chroma_orch.db.models import Event, Instance, Tenant
from tests.helpers import bearer, create_tenant, settle

NOW = datetime.now(UTC)


def _event(
    type: str, instance_id: uuid.UUID, ago: float, after: dict[str, Any], tenant: Any = None
) -> dict[str, Any]:
    return {
        "type": type,
        "instance_id": instance_id,
        "tenant_id": tenant,
        "after": after,
        "created_at": datetime.now(UTC) - timedelta(seconds=ago),
    }


def _phase(instance_id: uuid.UUID, ago: float, phase: str) -> dict[str, Any]:
    return _event("instance.phase_changed", instance_id, ago, {"phase": phase})


async def _append(engine: AsyncEngine, events: list[dict[str, Any]]) -> None:
    async with engine.begin() as conn:
        for event in events:  # one by one: seq follows the list's order
            await conn.execute(insert(Event).values(**event))


async def _launch(client: httpx.AsyncClient, tenant_id: str, name: str) -> str:
    response = await client.post("/v1/instances", json={"name": name, "tenant_id": tenant_id})
    assert response.status_code == 202, response.text
    return str(response.json()["instance"]["id"])


async def test_counts_by_phase_and_runtime_agree_with_metrics(
    client: httpx.AsyncClient, api_app: FastAPI
) -> None:
    a, _ = await create_tenant(client, "acme")
    b, _ = await create_tenant(client, "bolt")
    first = await _launch(client, a, "one")
    await _launch(client, a, "two")
    await _launch(client, b, "three")
    await settle(api_app.state.ctx.engine, first, "running")

    fleet = (await client.get("/v1/fleet")).json()

    assert fleet["total"] == 3
    assert fleet["by_phase"] == {"pending": 2, "running": 1}
    assert fleet["by_runtime"] == {"local": 3}
    metrics = (await client.get("/metrics")).text
    assert 'chroma_orch_instances{phase="pending",runtime="local"} 2.0' in metrics
    assert 'chroma_orch_instances{phase="running",runtime="local"} 1.0' in metrics


async def test_histogram_times_each_start_from_its_request_to_running(
    client: httpx.AsyncClient, api_app: FastAPI
) -> None:
    a, b, old = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    await _append(
        api_app.state.ctx.engine,
        [
            # a: created, queued 1 s, running 3 s after the request
            _event("instance.created", a, 100, {"phase": "pending"}),
            _phase(a, 99, "starting"),
            _phase(a, 97, "running"),
            # b: stopped, started by request (10 s), then crashed and restarted (1 s)
            _phase(b, 200, "stopped"),
            _event("instance.desired_changed", b, 90, {"desired_state": "running"}),
            _phase(b, 88, "starting"),
            _phase(b, 80, "running"),
            _event("instance.crashed", b, 60, {"reason": "Exited"}),
            _phase(b, 60, "starting"),
            _phase(b, 59, "running"),
            # a start outside the window
            _event("instance.created", old, 7300, {"phase": "pending"}),
            _phase(old, 7200, "running"),
        ],
    )

    hist = (await client.get("/v1/fleet", params={"window": 3600})).json()["start_times"]

    assert hist["count"] == 3
    assert hist["max_seconds"] == pytest.approx(10, abs=0.01)
    assert hist["p50_seconds"] == pytest.approx(3, abs=0.01)
    assert hist["bucket_seconds"] == pytest.approx(0.5, abs=0.001)
    assert len(hist["buckets"]) == 20
    assert {i: n for i, n in enumerate(hist["buckets"]) if n} == {2: 1, 6: 1, 19: 1}
    wide = (await client.get("/v1/fleet", params={"window": 86400})).json()["start_times"]
    assert wide["count"] == 4
    assert wide["max_seconds"] == pytest.approx(100, abs=0.01)


async def test_failures_newest_first_with_reason_and_names(
    client: httpx.AsyncClient, api_app: FastAPI
) -> None:
    tenant, _ = await create_tenant(client, "acme")
    instance = uuid.UUID(await _launch(client, tenant, "flaky"))
    t = uuid.UUID(tenant)
    await _append(
        api_app.state.ctx.engine,
        [
            _event("instance.failed", instance, 7200, {"reason": "Old"}, t),
            _event("instance.crashed", instance, 30, {"reason": "Exited", "message": "1"}, t),
            _event(
                "instance.failed", instance, 10, {"reason": "StartTimeout", "message": "60s"}, t
            ),
        ],
    )

    failures = (await client.get("/v1/fleet")).json()["failures"]

    assert [(f["event"], f["reason"], f["message"]) for f in failures] == [
        ("instance.failed", "StartTimeout", "60s"),
        ("instance.crashed", "Exited", "1"),
    ]
    assert failures[0]["instance_name"] == "flaky"
    assert failures[0]["tenant_name"] == "acme"
    assert failures[0]["instance_id"] == str(instance)
    one = (await client.get("/v1/fleet", params={"failures": 1})).json()["failures"]
    assert [f["reason"] for f in one] == ["StartTimeout"]
    none = (await client.get("/v1/fleet", params={"failures": 0})).json()["failures"]
    assert none == []


@pytest.mark.parametrize(
    "params",
    [
        {"failures": 101},
        {"failures": -1},
        {"failures": "x"},
        {"window": 59},
        {"window": 86401},
        {"window": "1h"},
    ],
)
async def test_bad_parameters_are_422_problems(
    client: httpx.AsyncClient, params: dict[str, Any]
) -> None:
    response = await client.get("/v1/fleet", params=params)
    assert response.status_code == 422
    assert response.headers["content-type"].startswith("application/problem+json")


async def test_admin_only(client: httpx.AsyncClient, api_app: FastAPI) -> None:
    _, token = await create_tenant(client, "acme")
    transport = httpx.ASGITransport(app=api_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as anon:
        assert (await anon.get("/v1/fleet", headers=bearer(token))).status_code == 403
        assert (await anon.get("/v1/fleet")).status_code == 401


_FILL = [
    "INSERT INTO tenants (id, name) SELECT gen_random_uuid(), 'bulk-' || g "
    "FROM generate_series(1, 3) g",
    # ~50,000 events over two days: per instance created, starting, running, a
    # status change, and every tenth a crash
    "INSERT INTO events (type, instance_id, tenant_id, after, created_at) "
    "SELECT e.type, i.id, i.tenant_id, e.after, "
    "now() - interval '2 days' * random() "
    "FROM instances i, (VALUES "
    "('instance.created', '{\"phase\": \"pending\"}'::jsonb), "
    "('instance.phase_changed', '{\"phase\": \"starting\"}'::jsonb), "
    "('instance.phase_changed', '{\"phase\": \"running\"}'::jsonb), "
    "('instance.status_changed', '{\"phase\": \"running\"}'::jsonb)) e(type, after)",
    "INSERT INTO events (type, instance_id, tenant_id, after, created_at) "
    "SELECT 'instance.crashed', id, tenant_id, '{\"reason\": \"Exited\"}', "
    "now() - interval '2 days' * random() FROM instances WHERE name LIKE '%0'",
    "ANALYZE",
]


def _bulk_instance(tenant: uuid.UUID, n: int) -> dict[str, Any]:
    phases = ["running", "running", "running", "stopped", "failed", "starting"]
    return {
        "tenant_id": tenant,
        "name": f"i-{n}",
        "runtime": "ecs" if n % 10 == 0 else "local",
        "desired_state": "running",
        "phase": phases[n % 6],
    }


async def _explain(engine: AsyncEngine, statement: ClauseElement) -> tuple[str, float]:
    dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
    sql = str(statement.compile(dialect=dialect, compile_kwargs={"literal_binds": True}))
    async with engine.connect() as conn:
        plan = (await conn.execute(text("EXPLAIN (ANALYZE, BUFFERS) " + sql))).scalars().all()
        started = time.perf_counter()
        await conn.execute(text(sql))
        return "\n".join(plan), (time.perf_counter() - started) * 1000


async def test_plans_at_ten_thousand_instances(
    client: httpx.AsyncClient, api_app: FastAPI, capsys: pytest.CaptureFixture[str]
) -> None:
    engine: AsyncEngine = api_app.state.ctx.engine
    async with engine.begin() as conn:
        await conn.execute(text(_FILL[0]))
        tenant = (await conn.execute(select(Tenant.id).limit(1))).scalar_one()
        await conn.execute(insert(Instance), [_bulk_instance(tenant, n) for n in range(10000)])
        for statement in _FILL[1:]:
            await conn.execute(text(statement))
    since = datetime.now(UTC) - timedelta(hours=1)

    starts, starts_ms = await _explain(engine, start_times_statement(since, 1000, 20))
    failures, failures_ms = await _explain(engine, failures_statement(since, 20))
    counts, counts_ms = await _explain(engine, counts_statement())
    started = time.perf_counter()
    response = await client.get("/v1/fleet", params={"window": 86400})
    whole_ms = (time.perf_counter() - started) * 1000

    assert response.status_code == 200
    assert response.json()["total"] == 10000
    with capsys.disabled():
        print(f"\n-- start times ({starts_ms:.1f} ms)\n{starts}")  # noqa: T201
        print(f"-- failures ({failures_ms:.1f} ms)\n{failures}")  # noqa: T201
        print(f"-- counts ({counts_ms:.1f} ms)\n{counts}")  # noqa: T201
        print(f"-- GET /v1/fleet window=86400: {whole_ms:.1f} ms")  # noqa: T201
    assert "ix_events_running" in starts
    assert "ix_events_lifecycle" in starts
    assert "ix_events_failures" in failures
    assert "Seq Scan on events" not in starts + failures
