"""A claim takes only what is due when it locks it, not what was due when it began.

Replicas claim at once under Read Committed: a claim's snapshot is taken when it
starts, and a row another replica changed since is re-checked on its newest version
when the claim locks it (PostgreSQL's EvalPlanQual), against the WHERE of the locking
scan only. The claim finds its candidates in a subquery (a UNION of two index
scans), so "still due" must also sit in that WHERE, or an instance another replica
claimed and released in between (due later now) is claimed a second time.

The race is made deterministic by pausing one claim inside its own execution: its
connection's ``search_path`` puts a view named ``pg_stat_activity`` (the claim reads
it for live lease owners) ahead of ``pg_catalog``, and the view waits on an advisory
lock the test holds. The claim's snapshot is taken by then; the other replica's
claim and release run; the lock is let go.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from chroma_orch.context import AppContext
from chroma_orch.reconciler import queue
from tests.helpers import wait_for
from tests.reconciler.conftest import launch

_GATE = 7_171_717
_LEASE = timedelta(seconds=30)


async def _install_gate(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.execute(text("CREATE SCHEMA gate"))
        await conn.execute(
            text(
                "CREATE FUNCTION gate.wait() RETURNS boolean LANGUAGE plpgsql VOLATILE AS $$"
                f" BEGIN PERFORM pg_advisory_lock_shared({_GATE});"
                f" PERFORM pg_advisory_unlock_shared({_GATE}); RETURN true; END $$"
            )
        )
        await conn.execute(
            text(
                "CREATE VIEW gate.pg_stat_activity AS SELECT application_name"
                " FROM pg_catalog.pg_stat_activity WHERE gate.wait()"
            )
        )


async def test_an_instance_claimed_and_released_meanwhile_is_not_claimed_again(
    client: httpx.AsyncClient, tenant: str, ctx: AppContext
) -> None:
    engine = ctx.engine
    await _install_gate(engine)
    due = uuid.UUID(await launch(client, tenant, "due-1"))
    held = uuid.UUID(await launch(client, tenant, "held-1"))
    async with engine.connect() as holder_conn, engine.connect() as paused_conn:
        holder = (await holder_conn.get_raw_connection()).driver_connection
        paused = (await paused_conn.get_raw_connection()).driver_connection
        assert holder is not None
        assert paused is not None
        # ``held`` is leased to a live connection's name: looking it up runs the view
        await holder.execute("SET application_name = 'holder'")
        await holder.execute(
            "UPDATE instances SET lease_owner = 'holder',"
            " lease_expires_at = now() + interval '1 minute' WHERE id = $1",
            held,
        )
        await paused.execute("SET search_path = gate, pg_catalog, public")
        await holder.execute(f"SELECT pg_advisory_lock({_GATE})")
        claim = asyncio.create_task(
            queue._CLAIM.fetch(paused, owner="replica-b", lease=_LEASE, batch=10)
        )
        pid = paused.get_server_pid()

        async def paused_at_gate() -> bool:
            waiting = await holder.fetchval(
                "SELECT wait_event = 'advisory' FROM pg_catalog.pg_stat_activity WHERE pid = $1",
                pid,
            )
            return bool(waiting)

        await wait_for(paused_at_gate, timeout=10)
        # meanwhile replica A claims the due instance, and its pass ends: due in an hour
        async with ctx.sessions() as session:
            claimed = await queue.claim_due(session, "replica-a", _LEASE, 10)
            assert [row.id for row in claimed] == [due]
            later = datetime.now(UTC) + timedelta(hours=1)
            await queue.release(session, due, "replica-a", later, clear_errors=True)
            await session.commit()
        await holder.execute(f"SELECT pg_advisory_unlock({_GATE})")
        taken = await asyncio.wait_for(claim, timeout=10)
    assert [row["id"] for row in taken] == []  # not due any more when B locked it
    async with ctx.sessions() as session:
        owner = await session.scalar(
            text("SELECT lease_owner FROM instances WHERE id = :id"), {"id": due}
        )
    assert owner is None
