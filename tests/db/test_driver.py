"""Statements sent with the driver belong to the session's transaction."""

from __future__ import annotations

import uuid

from sqlalchemy import text

from chroma_orch.db.driver import driver
from chroma_orch.db.session import create_engine, create_session_factory


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
