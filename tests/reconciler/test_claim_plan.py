"""The reconciler's claim reads only what is due or leased, not the fleet: at 10,000
instances with a handful due, its plan holds no sequential scan of ``instances``
(issue 17: a claim ran several times a second and read every row of the table); nor
does the work loop's question after each wake, when the next instance falls due; nor
the heartbeat pass's write for the servers that answered. Between vacuums, a claim
skips the dead row versions that earlier claims and releases left in its indexes."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from chroma_orch.db.statements import Statement
from chroma_orch.reconciler import heartbeat, queue
from tests.fleet_rows import insert_fleet


async def _explain(engine: AsyncEngine, statement: Statement, options: str) -> list[Any]:
    """``EXPLAIN (options)`` of a statement, run and rolled back: the claim writes."""
    given = {"owner": "plan-test", "lease": timedelta(seconds=30), "batch": 16}
    args = statement.args({name: given[name] for name in statement.params if name in given})
    async with engine.connect() as conn:
        raw = (await conn.get_raw_connection()).driver_connection
        assert raw is not None
        transaction = raw.transaction()
        await transaction.start()
        try:
            rows = await raw.fetch(f"EXPLAIN ({options}) {statement.sql}", *args)
        finally:
            await transaction.rollback()
    return [row[0] for row in rows]


async def _plan(engine: AsyncEngine, statement: Statement = queue._CLAIM) -> str:
    """A statement's plan as text, run (ANALYZE)."""
    return "\n".join(await _explain(engine, statement, "ANALYZE, BUFFERS"))


async def _json_plan(engine: AsyncEngine, statement: Statement) -> dict[str, Any]:
    """A statement's plan as its JSON tree (the engine's connections decode JSON)."""
    document = await _explain(engine, statement, "ANALYZE, BUFFERS, FORMAT JSON")
    plan: dict[str, Any] = document[0][0]["Plan"]
    return plan


async def test_a_claim_at_ten_thousand_instances_reads_only_the_due_and_leased(
    api_app: FastAPI,
) -> None:
    engine: AsyncEngine = api_app.state.ctx.engine
    await insert_fleet(engine, instances=10_000, tenants=100)
    async with engine.begin() as conn:  # settled: nothing due, a few due, a few leased
        await conn.execute(text("UPDATE instances SET next_reconcile_at = NULL"))
        await conn.execute(
            text(
                "UPDATE instances SET next_reconcile_at = now() - interval '1 second'"
                " WHERE id IN (SELECT id FROM instances ORDER BY id LIMIT 5)"
            )
        )
        await conn.execute(
            text(
                "UPDATE instances SET lease_owner = 'elsewhere',"
                " lease_expires_at = now() + interval '1 minute'"
                " WHERE id IN (SELECT id FROM instances ORDER BY id DESC LIMIT 5)"
            )
        )
    async with engine.connect() as conn:  # VACUUM: the updates' old index entries gone
        raw = (await conn.get_raw_connection()).driver_connection
        assert raw is not None
        await raw.execute("VACUUM ANALYZE instances")
    for statement in (queue._CLAIM, queue._NEXT_DUE):  # the work loop's, on every wake
        plan = await _plan(engine, statement)
        assert "Seq Scan on instances" not in plan, plan


def _scans(node: dict[str, Any]) -> list[dict[str, Any]]:
    """Every scan of ``instances`` in a JSON plan."""
    found = [node] if node.get("Relation Name") == "instances" else []
    for child in node.get("Plans", []):
        found += _scans(child)
    return found


async def test_a_claim_skips_the_dead_entries_earlier_claims_left(api_app: FastAPI) -> None:
    """Each claim and release leaves a dead row version, and its entries in the due and
    leased indexes, until a vacuum. An OR of the two conditions was read by one bitmap
    scan, which never marks dead entries: every claim read them all again (at 10,000
    instances 3,000 dead entries, ~270 pages a claim, between autovacuums). Read by
    plain index scans, the first claim marks them and the next skips them."""
    engine: AsyncEngine = api_app.state.ctx.engine
    await insert_fleet(engine, instances=10_000, tenants=100)
    async with engine.connect() as conn:
        raw = (await conn.get_raw_connection()).driver_connection
        assert raw is not None
        await raw.execute("ALTER TABLE instances SET (autovacuum_enabled = false)")
        await raw.execute("UPDATE instances SET next_reconcile_at = NULL")
        await raw.execute("VACUUM ANALYZE instances")
        for n in range(30):  # 3,000 instances fall due, are claimed, are released
            rows = f"id IN (SELECT id FROM instances ORDER BY id OFFSET {n * 100} LIMIT 100)"
            await raw.execute(
                f"UPDATE instances SET next_reconcile_at = now() - interval '1 second' WHERE {rows}"
            )
            await raw.execute(
                "UPDATE instances SET lease_owner = 'gone', next_reconcile_at = NULL,"
                f" lease_expires_at = now() + interval '1 minute' WHERE {rows}"
            )
            await raw.execute(
                f"UPDATE instances SET lease_owner = NULL, lease_expires_at = NULL WHERE {rows}"
            )
        await raw.execute(  # what is left to claim: 5 due, 5 leased by an owner gone
            "UPDATE instances SET next_reconcile_at = now() - interval '1 second'"
            " WHERE id IN (SELECT id FROM instances ORDER BY id LIMIT 5)"
        )
        await raw.execute(
            "UPDATE instances SET lease_owner = 'gone', lease_expires_at = now() + interval"
            " '1 minute' WHERE id IN (SELECT id FROM instances ORDER BY id DESC LIMIT 5)"
        )
    read = []
    for _ in ("first", "next"):
        scans = _scans(await _json_plan(engine, queue._CLAIM))
        assert all("Bitmap" not in scan["Node Type"] for scan in scans), scans
        assert all(scan["Node Type"] != "Seq Scan" for scan in scans), scans
        arms = [
            s for s in scans if s.get("Index Name") in ("ix_instances_due", "ix_instances_leased")
        ]
        assert [s["Actual Rows"] for s in arms] == [5, 5], arms  # each arm's live rows
        read.append(sum(s["Shared Hit Blocks"] + s["Shared Read Blocks"] for s in arms))
    first, following = read
    assert following < first / 4, read  # the first met the 6,000 dead entries, the next skips


async def test_the_heartbeat_pass_clears_misses_without_reading_the_fleet(
    api_app: FastAPI,
) -> None:
    """A pass's answered servers (up to a batch of 5,000 ids) are cleared of misses;
    nearly none had any. At 10,000 instances the planner read the whole table for
    that (bench/fleet.py, two runs of three) before the partial index of rows with
    misses."""
    engine: AsyncEngine = api_app.state.ctx.engine
    await insert_fleet(engine, instances=10_000, tenants=100)
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "UPDATE instances SET heartbeat_failures = 1"
                " WHERE id IN (SELECT id FROM instances ORDER BY id LIMIT 3)"
            )
        )
        answered = list(
            (
                await conn.execute(
                    text("SELECT id FROM instances WHERE phase = 'running' ORDER BY id LIMIT 5000")
                )
            ).scalars()
        )
    async with engine.connect() as conn:
        raw = (await conn.get_raw_connection()).driver_connection
        assert raw is not None
        await raw.execute("VACUUM ANALYZE instances")
        write = heartbeat.answered_write(answered).compile(
            dialect=engine.dialect, compile_kwargs={"literal_binds": True}
        )
        transaction = raw.transaction()
        await transaction.start()
        try:
            rows = await raw.fetch(f"EXPLAIN (ANALYZE, BUFFERS) {write}")
        finally:
            await transaction.rollback()
    plan = "\n".join(row[0][:200] for row in rows)  # not all 5,000 ids
    assert "Seq Scan on instances" not in plan, plan
