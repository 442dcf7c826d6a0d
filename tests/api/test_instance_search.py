"""GET /v1/instances at fleet scale: search by a prefix of the instance's or the
tenant's name, beside the phase and tenant filters and the cursor; each page carries
the event log's seq; bad searches are 422 problems; and at 10,000 instances no page
reads ``instances`` sequentially (EXPLAIN)."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from chroma_orch.db.instance_list import PageFilter, page_statement
from chroma_orch.db.models import Event
from tests.conftest import ADMIN_TOKEN
from tests.fleet_rows import insert_fleet
from tests.helpers import bearer, create_tenant


def _engine(api_app: FastAPI) -> AsyncEngine:
    engine: AsyncEngine = api_app.state.ctx.engine
    return engine


async def _all_pages(client: httpx.AsyncClient, **params: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        query = {**params, **({"cursor": cursor} if cursor else {})}
        response = await client.get("/v1/instances", params=query)
        assert response.status_code == 200, response.text
        body = response.json()
        assert len(body["items"]) <= int(params.get("limit", 50))
        items += body["items"]
        cursor = body["next_cursor"]
        if cursor is None:
            return items


async def test_search_matches_a_prefix_of_the_instance_or_tenant_name(
    client: httpx.AsyncClient, api_app: FastAPI
) -> None:
    await insert_fleet(_engine(api_app), instances=300, tenants=30)
    by_name = await _all_pages(client, search="db-001", limit=7)
    assert sorted(i["name"] for i in by_name) == [f"db-{n:05d}" for n in range(100, 200)]
    tenants = {t["name"]: t["id"] for t in (await client.get("/v1/tenants")).json()}
    by_tenant = await _all_pages(client, search="fleet-007")
    assert {i["tenant_id"] for i in by_tenant} == {tenants["fleet-007"]}
    assert len(by_tenant) == 10
    assert await _all_pages(client, search="fleet-0") == await _all_pages(client)
    assert await _all_pages(client, search="nothing") == []
    assert await _all_pages(client, search="db-%") == []  # no wildcards
    assert await _all_pages(client, search="DB-0") == []  # case-sensitive


async def test_search_with_filters_and_pages_in_creation_order(
    client: httpx.AsyncClient, api_app: FastAPI
) -> None:
    tenant_ids = await insert_fleet(_engine(api_app), instances=500, tenants=5)
    failed = await _all_pages(client, phase="failed", search="db-000", limit=9)
    assert [i["name"] for i in failed] == [f"db-{n:05d}" for n in range(3, 100, 5)]
    one = await _all_pages(client, tenant_id=str(tenant_ids[2]), search="db-001", limit=3)
    assert [i["name"] for i in one] == [f"db-{n:05d}" for n in range(102, 200, 5)]
    everything = await _all_pages(client, limit=50)
    assert [i["name"] for i in everything] == [f"db-{n:05d}" for n in range(500)]


async def test_a_tenant_searches_only_its_own(client: httpx.AsyncClient, api_app: FastAPI) -> None:
    await insert_fleet(_engine(api_app), instances=50, tenants=5)
    _, token = await create_tenant(client, "acme")
    client.headers.update(bearer(token))
    assert (await client.post("/v1/instances", json={"name": "db-zz"})).status_code == 202
    assert [i["name"] for i in await _all_pages(client, search="db-")] == ["db-zz"]
    assert await _all_pages(client, search="fleet") == []
    assert len(await _all_pages(client, search="acme")) == 1
    client.headers.update(bearer(ADMIN_TOKEN))
    assert len(await _all_pages(client, search="db-")) == 51


async def test_each_page_carries_the_event_logs_seq(
    client: httpx.AsyncClient, api_app: FastAPI
) -> None:
    assert (await client.get("/v1/instances")).json()["seq"] == 0
    _, token = await create_tenant(client, "acme")
    created = await client.post("/v1/instances", json={"name": "a"}, headers=bearer(token))
    assert created.status_code == 202
    async with _engine(api_app).connect() as conn:
        newest = await conn.scalar(select(func.max(Event.seq)))
    page = (await client.get("/v1/instances", params={"search": "a"})).json()
    assert newest is not None
    assert page["seq"] == newest
    assert [i["name"] for i in page["items"]] == ["a"]


@pytest.mark.parametrize(
    "search", ["", "x" * 64, "a\x00b", "db\n", "\x1b[31m", "a\x7f", "a\u200bb"]
)
async def test_a_bad_search_is_a_422_problem(client: httpx.AsyncClient, search: str) -> None:
    response = await client.get("/v1/instances", params={"search": search})
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == "validation_error"


async def test_63_characters_are_a_search(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/instances", params={"search": "x" * 63})
    assert response.status_code == 200, response.text
    assert response.json()["items"] == []


async def _plan(engine: AsyncEngine, page: PageFilter) -> str:
    """The page's plan as it ran (EXPLAIN ANALYZE)."""
    async with engine.connect() as conn:
        compiled = page_statement(page).compile(dialect=conn.dialect)
        params = tuple(compiled.params[name] for name in compiled.positiontup or ())
        rows = await conn.exec_driver_sql(f"EXPLAIN ANALYZE {compiled}", params)
        return "\n".join(str(row[0]) for row in rows)


def _rows_filtered_out(plan: str) -> int:
    """Rows the plan read and threw away (what a page costs beyond its own rows)."""
    return sum(int(n) for n in re.findall(r"Rows Removed by Filter: (\d+)", plan))


async def test_no_page_reads_instances_sequentially_at_10000(api_app: FastAPI) -> None:
    engine = _engine(api_app)
    tenant_ids = await insert_fleet(engine, instances=10_000, tenants=100)
    middle = (datetime.now(UTC) - timedelta(seconds=5000), uuid.uuid4())
    shapes = [
        PageFilter(gone=False, limit=50),
        PageFilter(gone=False, limit=50, after=middle),
        PageFilter(gone=True, limit=50),
        PageFilter(gone=False, limit=50, tenant_id=tenant_ids[3]),
        PageFilter(gone=False, limit=50, phase="failed"),
        PageFilter(gone=False, limit=50, search="db-0423"),
        PageFilter(gone=False, limit=50, search="fleet-04"),
        PageFilter(gone=False, limit=50, search="zz"),
        PageFilter(gone=False, limit=50, phase="stopped", search="db-01", after=middle),
        PageFilter(gone=False, limit=50, tenant_id=tenant_ids[5], search="db-1"),
    ]
    for shape in shapes:
        plan = await _plan(engine, shape)
        assert "Seq Scan on instances" not in plan, f"{shape}\n{plan}"
        # nor a walk of the whole creation order for the few rows a prefix matches
        assert _rows_filtered_out(plan) < 1_000, f"{shape}\n{plan}"
