"""Instance and intent rows read and written with the driver (``db/driver.py``).

These are the statements every lifecycle request and every reconcile pass runs,
so they skip the ORM, and a write and the intent that goes with it travel as one
statement. Rows come back as transient ``Instance``/``Intent`` objects (not in
the session: changing one changes nothing in the database). Column names in the
generated SQL come from the callers' code, never from input.
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
_INTENT_FILLED = (
    "created_at AS intent_created_at, updated_at AS intent_updated_at, "
    "next_attempt_at AS intent_next_attempt_at"
)
"""What the database fills in on a new intent, named apart from instance columns."""


def _param(column: str, value: Any) -> Any:
    return json.dumps(value) if column in _JSONB and value is not None else value


def _assignments(values: Mapping[str, Any], first: int) -> tuple[list[str], list[Any]]:
    """``column = $n`` for each value (``now()`` for ``NOW``), and the parameters."""
    parts, params = [], []
    for column, value in values.items():
        if value is NOW:
            parts.append(f"{column} = now()")
            continue
        params.append(_param(column, value))
        parts.append(f"{column} = ${first + len(params) - 1}")
    return parts, params


def _insert_sql(table: str, values: Mapping[str, Any], first: int) -> tuple[str, list[Any]]:
    placeholders = ", ".join(f"${first + n}" for n in range(len(values)))
    sql = f"INSERT INTO {table} ({', '.join(values)}) VALUES ({placeholders})"
    return sql, [_param(column, value) for column, value in values.items()]


def update_instance_sql(
    values: Mapping[str, Any], *, lease_owner: str | None = None, first: int = 1
) -> tuple[str, list[Any]]:
    """``UPDATE instances`` of ``values`` (and ``updated_at``) where ``id = $first``,
    ``RETURNING id``, and its parameters (those after the id). With ``lease_owner``,
    only while that replica holds the instance's lease."""
    parts, params = _assignments({**values, "updated_at": NOW}, first=first + 1)
    fence = ""
    if lease_owner is not None:
        params.append(lease_owner)
        fence = f" AND lease_owner = ${first + len(params)}"
    sql = f"UPDATE instances SET {', '.join(parts)} WHERE id = ${first}{fence} RETURNING id"
    return sql, params


def instance_of(row: asyncpg.Record) -> Instance:
    return Instance(**dict(row))


def _intent_of(values: Mapping[str, Any], row: asyncpg.Record) -> Intent:
    return Intent(
        **values,
        created_at=row["intent_created_at"],
        updated_at=row["intent_updated_at"],
        next_attempt_at=row["intent_next_attempt_at"],
    )


async def fetch_instance(
    session: AsyncSession, instance_id: uuid.UUID, *, for_update: bool = False
) -> Instance | None:
    lock = " FOR UPDATE" if for_update else ""
    con = await driver(session, begin=for_update)
    row = await con.fetchrow(f"SELECT * FROM instances WHERE id = $1{lock}", instance_id)
    return None if row is None else instance_of(row)


async def insert_instance(
    session: AsyncSession, values: Mapping[str, Any], intent: Mapping[str, Any]
) -> tuple[Instance, Intent]:
    """A new instance and its first intent (``intent`` without ``instance_id``)."""
    instance_values = {"id": uuid.uuid4(), **values}
    intent_values = {"id": uuid.uuid4(), "instance_id": instance_values["id"], **intent}
    instance_sql, params = _insert_sql("instances", instance_values, first=1)
    intent_sql, intent_params = _insert_sql("intents", intent_values, first=len(params) + 1)
    sql = (
        f"WITH instance AS ({instance_sql} RETURNING *), "
        f"intent AS ({intent_sql} RETURNING {_INTENT_FILLED}) "
        "SELECT * FROM instance, intent"
    )
    row = await (await driver(session)).fetchrow(sql, *params, *intent_params)
    fields = {key: row[key] for key in row.keys() if not key.startswith("intent_")}
    return Instance(**fields), _intent_of(intent_values, row)


async def add_intent(
    session: AsyncSession,
    intent: Mapping[str, Any],
    *,
    instance_changes: Mapping[str, Any] | None = None,
) -> Intent:
    """A new intent; with ``instance_changes``, its instance is updated by the same
    statement (see ``update_instance_sql``)."""
    values = {"id": uuid.uuid4(), **intent}
    sql, params = _insert_sql("intents", values, first=1)
    sql = f"{sql} RETURNING {_INTENT_FILLED}"
    if instance_changes is not None:
        update, update_params = update_instance_sql(instance_changes, first=len(params) + 1)
        sql = f"WITH updated AS ({update}) {sql}"
        params += [values["instance_id"], *update_params]
    row = await (await driver(session)).fetchrow(sql, *params)
    return _intent_of(values, row)


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
