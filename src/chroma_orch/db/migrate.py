"""Run the packaged Alembic migrations on an async engine."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from chroma_orch.db.locks import NamedLock, lock


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", script_location())
    return config


# A source checkout: src/chroma_orch/db/migrate.py three levels below alembic.ini.
_CHECKOUT = Path(__file__).resolve().parents[3]


def script_location() -> str:
    """Where the Alembic scripts are: a source checkout's top-level ``migrations/``
    (beside its ``alembic.ini``), else the copy installed as ``chroma_orch/migrations``.

    The checkout comes first so code run from a checkout (``PYTHONPATH=src``, an editable
    install) migrates with its own scripts, never another installation's.
    """
    if (_CHECKOUT / "alembic.ini").is_file():
        return str(_CHECKOUT / "migrations")
    return "chroma_orch:migrations"


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
