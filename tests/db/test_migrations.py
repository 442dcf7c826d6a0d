"""The migrations produce exactly the schema the ORM models describe, and go down."""

from __future__ import annotations

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import Connection

from chroma_orch.db.migrate import alembic_config
from chroma_orch.db.models import Base
from chroma_orch.db.session import create_engine


def _diff(connection: Connection) -> list[object]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return list(compare_metadata(context, Base.metadata))


def _downgrade_all(connection: Connection) -> None:
    config = alembic_config()
    config.attributes["connection"] = connection
    command.downgrade(config, "base")


async def test_models_match_migrations_and_downgrade_works(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            assert await conn.run_sync(_diff) == []
        async with engine.begin() as conn:
            await conn.run_sync(_downgrade_all)
        async with engine.connect() as conn:
            tables = await conn.exec_driver_sql(
                "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public' "
                "AND table_name <> 'alembic_version'"
            )
            assert tables.scalar() == 0
    finally:
        await engine.dispose()


async def test_intents_keep_no_lease_of_their_own(database_url: str) -> None:
    """The reconciler leases instances; intent lease columns were written, never read."""
    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            found = await conn.exec_driver_sql(
                "SELECT column_name FROM information_schema.columns "
                "WHERE table_name = 'intents' "
                "AND column_name IN ('lease_owner', 'lease_expires_at', 'next_attempt_at')"
            )
            assert found.scalars().all() == []
    finally:
        await engine.dispose()
