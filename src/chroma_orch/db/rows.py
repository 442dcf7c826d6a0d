"""Instance and intent rows read and written with the driver (``db/driver.py``).

These are the statements every lifecycle request and every reconcile pass runs,
so they skip the ORM. Rows come back as transient ``Instance``/``Intent``
objects (not in the session: changing one changes nothing in the database).
Column names in the generated SQL come from the callers' code, never from input.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from typing import Any

import asyncpg
from sqlalchemy.ext.asyncio import AsyncSession

from chroma_orch.db.driver import driver
from chroma_orch.db.models import Instance, Intent

NOW = object()
"""A value that stands for the database's ``now()``."""

_JSONB = frozenset({"spec", "handle", "last_handle"})


def _assignments(values: Mapping[str, Any], first: int) -> tuple[list[str], list[Any]]:
    """``column = $n`` for each value (``now()`` for ``NOW``), and the parameters."""
    parts, params = [], []
    for column, value in values.items():
        if value is NOW:
            parts.append(f"{column} = now()")
            continue
        params.append(json.dumps(value) if column in _JSONB and value is not None else value)
        parts.append(f"{column} = ${first + len(params) - 1}")
    return parts, params


def instance_of(row: asyncpg.Record) -> Instance:
    return Instance(**dict(row))


async def fetch_instance(
    session: AsyncSession, instance_id: uuid.UUID, *, for_update: bool = False
) -> Instance | None:
    lock = " FOR UPDATE" if for_update else ""
    con = await driver(session, begin=for_update)
    row = await con.fetchrow(f"SELECT * FROM instances WHERE id = $1{lock}", instance_id)
    return None if row is None else instance_of(row)


async def insert_instance(session: AsyncSession, values: Mapping[str, Any]) -> Instance:
    return instance_of(await _insert(session, "instances", values))


async def insert_intent(session: AsyncSession, values: Mapping[str, Any]) -> Intent:
    return Intent(**dict(await _insert(session, "intents", values)))


async def _insert(session: AsyncSession, table: str, values: Mapping[str, Any]) -> asyncpg.Record:
    values = {"id": uuid.uuid4(), **values}
    columns = ", ".join(values)
    placeholders = ", ".join(f"${n}" for n in range(1, len(values) + 1))
    params = [json.dumps(v) if k in _JSONB and v is not None else v for k, v in values.items()]
    sql = f"INSERT INTO {table} ({columns}) VALUES ({placeholders}) RETURNING *"
    row: asyncpg.Record = await (await driver(session)).fetchrow(sql, *params)
    return row


def update_instance_sql(
    values: Mapping[str, Any], *, lease_owner: str | None = None
) -> tuple[str, list[Any]]:
    """``UPDATE instances`` of ``values`` (and ``updated_at``) where ``id = $1``,
    ``RETURNING id``, with its parameters after the id; with ``lease_owner``, only
    while that replica holds the instance's lease."""
    parts, params = _assignments({**values, "updated_at": NOW}, first=2)
    fence = ""
    if lease_owner is not None:
        params.append(lease_owner)
        fence = f" AND lease_owner = ${len(params) + 1}"
    return f"UPDATE instances SET {', '.join(parts)} WHERE id = $1{fence} RETURNING id", params


async def update_instance(
    session: AsyncSession,
    instance_id: uuid.UUID,
    values: Mapping[str, Any],
    *,
    lease_owner: str | None = None,
) -> bool:
    """Set ``values`` (see ``update_instance_sql``). True if the row was updated."""
    sql, params = update_instance_sql(values, lease_owner=lease_owner)
    return await (await driver(session)).fetchval(sql, instance_id, *params) is not None
