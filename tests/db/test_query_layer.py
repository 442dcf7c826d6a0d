"""How a renamed column is caught before a request needs it (docs/queries.md).

Statements are SQLAlchemy Core against the models' columns, compiled once at
import and registered by name (``db/statements.py``): renaming a model attribute
breaks the import; a database whose column was renamed under the code fails
``check_statements`` (run by ``chroma-orch migrate`` and at the app's start),
naming the statement."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import text

import chroma_orch
import chroma_orch.app  # noqa: F401  (imports every module that registers statements)
from chroma_orch.db import instance_writes
from chroma_orch.db.session import create_engine
from chroma_orch.db.statements import REGISTRY, StatementSchemaError, check_engine

_SOURCE = Path(chroma_orch.__file__).parent


def test_every_named_statement_is_registered_once_with_its_parameters() -> None:
    """The reconciler's status writes are named operations, each one statement."""
    writes = [
        value
        for value in vars(instance_writes).values()
        if isinstance(value, instance_writes.FencedWrite)
    ]
    names = {write.name for write in writes}
    assert {"record_starting", "mark_running", "mark_stopped", "mark_failed"} <= names
    for write in writes:
        assert REGISTRY[write.name] is write.statement
        assert {"id", "owner", *write.columns} <= set(write.statement.params)
    for statement in REGISTRY.values():
        assert "POSTCOMPILE" not in statement.sql
        assert len(set(statement.params)) == len(statement.params)


async def test_every_statement_fits_the_migrated_schema(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        await check_engine(engine)
    finally:
        await engine.dispose()


async def test_a_column_renamed_in_the_database_fails_the_check_naming_it(
    database_url: str,
) -> None:
    """A scratch copy of the schema (this test's own database, migrated) with one
    column renamed: the check fails at once, saying which statement and column."""
    engine = create_engine(database_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(text("ALTER TABLE allocated_ports RENAME COLUMN port TO host_port"))
        with pytest.raises(StatementSchemaError, match=r"statement '\w+'.*\bport\b"):
            await check_engine(engine)
    finally:
        await engine.dispose()


def test_a_model_attribute_renamed_breaks_the_import(tmp_path: Path) -> None:
    """A copy of the package whose model renames ``Instance.phase``: importing the
    service fails, naming the column, before any statement runs."""
    copy = tmp_path / "chroma_orch"
    shutil.copytree(_SOURCE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    models = copy / "db" / "models.py"
    source = models.read_text()
    assert "    phase: Mapped[str]" in source
    models.write_text(source.replace("    phase: Mapped[str]", "    state: Mapped[str]"))
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-c", "import chroma_orch.app"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode != 0
    assert "phase" in result.stderr.splitlines()[-1], result.stderr[-2000:]
