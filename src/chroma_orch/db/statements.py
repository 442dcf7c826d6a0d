"""Every statement the hot paths send, written once and compiled once.

A statement is SQLAlchemy Core against the models' tables (``db/models.py``), with
named parameters (``bindparam("owner")``). It is compiled once, at import, by
SQLAlchemy's asyncpg dialect into the SQL text and the order of its parameters,
registered under a name, and sent with asyncpg: SQLAlchemy's own execution costs
several times the driver's CPU per statement (see ``db/driver.py``).

A renamed column is caught early: Core names columns through the models, so
renaming a model attribute breaks at import; and ``check_statements`` prepares
every registered statement against the live schema (``chroma-orch migrate`` and
the app's start run it, after migrating), so a database whose column was renamed under the code
fails at once, naming the statement, not on the first request that needs it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import asyncpg
from sqlalchemy import ColumnElement, literal
from sqlalchemy.dialects.postgresql import asyncpg as asyncpg_dialect
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import ClauseElement

_DIALECT = asyncpg_dialect.dialect()  # type: ignore[no-untyped-call]


class StatementSchemaError(Exception):
    """A registered statement does not fit the database's schema."""


@dataclass(frozen=True)
class Statement:
    """One compiled statement: its SQL (``$n`` placeholders), and for each
    placeholder the name of its parameter and how to convert its value."""

    name: str
    sql: str
    params: tuple[str, ...]
    converters: tuple[Callable[[Any], Any] | None, ...]
    defaults: Mapping[str, Any]
    """Values fixed where the statement is written (``bindparam(name, value)``)."""

    def args(self, given: Mapping[str, Any]) -> list[Any]:
        """The positional arguments for ``given`` (every parameter without a
        default, by name)."""
        values = {**self.defaults, **given}
        missing = set(self.params) - values.keys()
        if missing:
            raise TypeError(f"{self.name}: missing parameters {sorted(missing)}")
        return [
            value if convert is None or value is None else convert(value)
            for value, convert in zip(
                (values[name] for name in self.params), self.converters, strict=True
            )
        ]

    async def fetch(self, con: asyncpg.Connection, **values: Any) -> list[asyncpg.Record]:
        return list(await con.fetch(self.sql, *self.args(values)))

    async def fetchrow(self, con: asyncpg.Connection, **values: Any) -> asyncpg.Record | None:
        return await con.fetchrow(self.sql, *self.args(values))

    async def fetchval(self, con: asyncpg.Connection, **values: Any) -> Any:
        return await con.fetchval(self.sql, *self.args(values))

    async def execute(self, con: asyncpg.Connection, **values: Any) -> None:
        await con.execute(self.sql, *self.args(values))


def one_of(column: ColumnElement[Any], values: Iterable[Any]) -> ColumnElement[bool]:
    """``column IN (values...)`` for values fixed where the statement is written."""
    return column.in_([literal(value, column.type) for value in values])


REGISTRY: dict[str, Statement] = {}
"""Every statement compiled by ``compiled``, by name."""


def compiled(name: str, statement: ClauseElement) -> Statement:
    """Compile ``statement`` once and register it under ``name``."""
    result = _compile(name, statement)
    if "POSTCOMPILE" in result.string:
        raise ValueError(f"{name}: write IN lists with one_of (an expanding IN needs values)")
    order = tuple(result.positiontup or ())
    binds = result.binds
    converters = tuple(binds[param].type.bind_processor(_DIALECT) for param in order)
    defaults = {param: binds[param].value for param in order if not binds[param].required}
    return _register(Statement(name, result.string, order, converters, defaults))


def compiled_literal(name: str, statement: ClauseElement) -> Statement:
    """Compile ``statement``, which takes no parameters (its values fixed where it is
    written), with those values inline, and register it under ``name``: for the
    simple query protocol, which sends several statements in one message but no
    parameters (``db/outbox.py``'s commit)."""
    result = _compile(name, statement, literal_binds=True)
    unset = sorted(bind.key for bind in result.binds.values() if bind.required)
    if unset:  # SQLAlchemy would send them as NULL
        raise ValueError(f"{name}: parameters without a value cannot go inline: {unset}")
    if result.positiontup:  # a part that renders its values as parameters anyway
        raise ValueError(f"{name}: {list(result.positiontup)} did not render inline")
    return _register(Statement(name, result.string, (), (), {}))


def _compile(name: str, statement: ClauseElement, **compile_kwargs: Any) -> SQLCompiler:
    if name in REGISTRY:
        raise ValueError(f"statement {name!r} is defined twice")
    result = statement.compile(dialect=_DIALECT, compile_kwargs=compile_kwargs)
    assert isinstance(result, SQLCompiler)
    return result


def _register(statement: Statement) -> Statement:
    REGISTRY[statement.name] = statement
    return statement


async def check_statements(con: asyncpg.Connection) -> None:
    """Prepare every registered statement on ``con``: fails, naming the statement
    and the database's complaint, when one does not fit the live schema (a renamed
    or dropped column or table). Nothing is executed."""
    for statement in REGISTRY.values():
        try:
            await con.prepare(statement.sql)
        except asyncpg.PostgresError as exc:
            raise StatementSchemaError(
                f"statement {statement.name!r} does not fit the database schema: {exc}"
            ) from exc


async def check_engine(engine: AsyncEngine) -> None:
    """``check_statements`` on a connection of ``engine``."""
    async with engine.connect() as connection:
        raw = await connection.get_raw_connection()
        await check_statements(raw.driver_connection)
