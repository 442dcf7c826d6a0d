"""Run the packaged Alembic migrations on an async engine."""

from __future__ import annotations

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from chroma_orch.db.locks import NamedLock, lock


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", "chroma_orch:migrations")
    return config


def _upgrade(connection: Connection) -> None:
    config = alembic_config()
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


def _at_head(connection: Connection) -> bool:
    heads = set(ScriptDirectory.from_config(alembic_config()).get_heads())
    current = set(MigrationContext.configure(connection).get_current_heads())
    return current == heads


async def upgrade(engine: AsyncEngine) -> None:
    """Migrate to head (a no-op when already there). Serialised across replicas."""
    async with engine.begin() as conn:
        await lock(conn, NamedLock.MIGRATE)
        await conn.run_sync(_upgrade)


async def at_head(engine: AsyncEngine) -> bool:
    async with engine.connect() as conn:
        return await conn.run_sync(_at_head)
