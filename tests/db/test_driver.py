"""Statements sent with the driver belong to the session's transaction."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import bindparam, select, text
from sqlalchemy.exc import DBAPIError

from chroma_orch.db.driver import driver, fetchrow_begun
from chroma_orch.db.models import Tenant, table_of
from chroma_orch.db.session import create_engine, create_session_factory
from chroma_orch.db.statements import compiled


async def test_driver_statements_commit_and_roll_back_with_the_session(database_url: str) -> None:
    engine = create_engine(database_url)
    sessions = create_session_factory(engine)
    kept, dropped = f"kept-{uuid.uuid4().hex[:8]}", f"dropped-{uuid.uuid4().hex[:8]}"
    insert = "INSERT INTO tenants (id, name) VALUES ($1, $2)"
    try:
        async with sessions() as session:
            await (await driver(session)).execute(insert, uuid.uuid4(), dropped)
            await session.execute(text("SELECT 1"))  # SQLAlchemy and driver share it
            await session.rollback()
        async with sessions() as session:
            con = await driver(session)
            assert con is await driver(session)
            await con.execute(insert, uuid.uuid4(), kept)
            await session.commit()
            # the same session, a new transaction: begun again, and rolled back
            await (await driver(session)).execute(insert, uuid.uuid4(), dropped)
            await session.rollback()
        alone = f"alone-{uuid.uuid4().hex[:8]}"
        async with sessions() as session:  # a read needing no transaction runs on its own
            await (await driver(session, begin=False)).execute(insert, uuid.uuid4(), alone)
            await (await driver(session)).execute(insert, uuid.uuid4(), dropped)
            await session.rollback()
        async with sessions() as session:
            names = set(await session.scalars(text("SELECT name FROM tenants")))
        assert {kept, alone} <= names
        assert dropped not in names
    finally:
        await engine.dispose()


_LOCK_TENANT = compiled(
    "test_driver_lock_tenant",
    select(table_of(Tenant)).where(table_of(Tenant).c.id == bindparam("id")).with_for_update(),
)


async def test_a_locking_read_begins_the_transaction_it_locks_in(database_url: str) -> None:
    """``fetchrow_begun``: the read that starts a unit of work begins its transaction
    (no ``SELECT 1`` first), so its row lock lasts, and what follows is in it."""
    engine = create_engine(database_url)
    sessions = create_session_factory(engine)
    tenant_id, name = uuid.uuid4(), f"locked-{uuid.uuid4().hex[:8]}"
    dropped = f"dropped-{uuid.uuid4().hex[:8]}"
    insert = "INSERT INTO tenants (id, name) VALUES ($1, $2)"
    try:
        async with sessions() as session:
            await (await driver(session, begin=False)).execute(insert, tenant_id, name)
        async with sessions() as session, sessions() as other:
            row = await fetchrow_begun(session, _LOCK_TENANT, id=tenant_id)
            assert row is not None
            assert row["name"] == name
            with pytest.raises(DBAPIError, match="could not obtain lock"):
                await other.execute(
                    text("SELECT 1 FROM tenants WHERE id = :id FOR UPDATE NOWAIT"),
                    {"id": tenant_id},
                )
            await (await driver(session)).execute(insert, uuid.uuid4(), dropped)
            await session.rollback()
        async with sessions() as session:
            names = set(await session.scalars(text("SELECT name FROM tenants")))
        assert name in names
        assert dropped not in names
    finally:
        await engine.dispose()
