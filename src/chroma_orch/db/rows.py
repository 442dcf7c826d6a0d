"""Instance and intent rows read and written with the driver (``db/driver.py``).

These are the statements every lifecycle request and every reconcile pass runs,
so they skip the ORM, and a request's write travels as one statement with its
intent, events and notifications (committing by itself when nothing else in the
unit of work began a transaction). Rows come back as transient ``Instance`` and
``Intent`` objects (not in the session: changing one changes nothing in the
database). Column names in the generated SQL come from the callers' code, never
from input.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import asyncpg
from sqlalchemy.ext.asyncio import AsyncSession

from chroma_orch.db.driver import driver
from chroma_orch.db.models import Instance, Intent
from chroma_orch.db.outbox import append_events_sql, defer_events

NOW = object()
"""A value that stands for the database's ``now()``."""

_JSONB = frozenset({"spec", "handle", "last_handle"})
_INTENT_FILLED = "created_at AS intent_created_at, updated_at AS intent_updated_at"
"""What the database fills in on a new intent, named apart from instance columns."""
_INTENT_COLUMNS = tuple(Intent.__table__.columns.keys())
_INTENT_COLUMNS_SQL = ", ".join(_INTENT_COLUMNS)
_REUSED = (
    "reused AS (SELECT " + _INTENT_COLUMNS_SQL + " FROM intents "
    "WHERE instance_id = $1 AND target_generation = ${g} AND status = ANY(${s}) "
    "AND EXISTS (SELECT FROM current) ORDER BY created_at DESC LIMIT 1)"
)
"""The intent a repeated request is answered with (see ``add_intent``)."""


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


def _insert_sql(
    table: str, values: Mapping[str, Any], first: int, source: str
) -> tuple[str, list[Any]]:
    """``INSERT INTO table ... SELECT <values> FROM source``: one row per row of
    ``source`` (a CTE, and a condition), so the insert happens only if it yields one."""
    placeholders = ", ".join(f"${first + n}" for n in range(len(values)))
    sql = f"INSERT INTO {table} ({', '.join(values)}) SELECT {placeholders} FROM {source}"
    return sql, [_param(column, value) for column, value in values.items()]


_INSTANCE_COLUMNS = tuple(Instance.__table__.columns.keys())
INSTANCE_COLUMNS_SQL = ", ".join(_INSTANCE_COLUMNS)
"""The columns this code knows, named (not ``*``): a replica still running the
previous release keeps working while a newer one adds a column."""


def instance_columns_sql(alias: str) -> str:
    """``INSTANCE_COLUMNS_SQL`` qualified with a table ``alias``."""
    return ", ".join(f"{alias}.{column}" for column in _INSTANCE_COLUMNS)


def update_instance_sql(
    values: Mapping[str, Any],
    *,
    lease_owner: str | None = None,
    generation: int | None = None,
    first: int = 1,
) -> tuple[str, list[Any]]:
    """``UPDATE instances`` of ``values`` (and ``updated_at``) where ``id = $first``,
    ``RETURNING id, next_reconcile_at``, and its parameters (those after the id).
    With ``lease_owner``, only while that replica holds the instance's lease; with
    ``generation``, only while the instance is still at that generation."""
    parts, params = _assignments({**values, "updated_at": NOW}, first=first + 1)
    where = f"id = ${first}"
    if lease_owner is not None:
        params.append(lease_owner)
        where += f" AND lease_owner = ${first + len(params)}"
    if generation is not None:
        params.append(generation)
        where += f" AND generation = ${first + len(params)}"
    sql = f"UPDATE instances SET {', '.join(parts)} WHERE {where} RETURNING id, next_reconcile_at"
    return sql, params


def instance_of(row: asyncpg.Record) -> Instance:
    """The instance in ``row`` (which may carry other columns beside its own)."""
    return Instance(**{column: row[column] for column in _INSTANCE_COLUMNS})


def _intent_of(values: Mapping[str, Any], row: asyncpg.Record) -> Intent:
    return Intent(
        **values,
        created_at=row["intent_created_at"],
        updated_at=row["intent_updated_at"],
    )


async def fetch_instance(
    session: AsyncSession, instance_id: uuid.UUID, *, for_update: bool = False
) -> Instance | None:
    lock = " FOR UPDATE" if for_update else ""
    con = await driver(session, begin=for_update)
    sql = f"SELECT {INSTANCE_COLUMNS_SQL} FROM instances WHERE id = $1{lock}"
    row = await con.fetchrow(sql, instance_id)
    return None if row is None else instance_of(row)


async def _with_events(
    session: AsyncSession,
    params: list[Any],
    events: list[dict[str, Any]],
    notify: Mapping[str, str],
    gate: str,
) -> tuple[asyncpg.Connection, list[str], str, Callable[[], None]]:
    """The connection, the CTEs and select items that append ``events`` and send
    ``notify`` once ``gate`` yields a row (their parameters added to ``params``),
    and what to call once the write succeeded: inside a longer transaction the
    events are not folded in but left to ``commit`` (see ``defer_events``)."""
    con = await driver(session, begin=False)
    deferred = con.is_in_transaction()
    appending, items, event_params = append_events_sql(
        [] if deferred else events, len(params) + 1, gate=gate, notify={} if deferred else notify
    )
    params += event_params

    def written() -> None:
        if deferred:
            defer_events(session, events, notify)

    return con, appending, items, written


async def insert_instance(
    session: AsyncSession,
    values: Mapping[str, Any],
    intent: Mapping[str, Any],
    *,
    admission: tuple[str, list[Any]],
    events: list[dict[str, Any]],
    notify: Mapping[str, str],
) -> tuple[asyncpg.Record, tuple[Instance, Intent] | None]:
    """A new instance (``values`` with its ``id``) and its first intent (without
    ``instance_id``), its events and notifications, in one statement, written
    only if ``admission`` (a query on ``$1``... answering one row with a boolean
    ``admitted``) admits it. Returns the admission row, and the new rows unless
    refused."""
    sql, params = admission
    intent_values = {"id": uuid.uuid4(), "instance_id": values["id"], **intent}
    instance_sql, instance_params = _insert_sql(
        "instances", values, len(params) + 1, "admission WHERE admitted"
    )
    params = [*params, *instance_params]
    intent_sql, intent_params = _insert_sql("intents", intent_values, len(params) + 1, "instance")
    params += intent_params
    con, appending, items, written = await _with_events(session, params, events, notify, "instance")
    ctes = [
        f"admission AS ({sql})",
        f"instance AS ({instance_sql} RETURNING {INSTANCE_COLUMNS_SQL})",
        f"intent AS ({intent_sql} RETURNING {_INTENT_FILLED})",
        *appending,
    ]
    row = await con.fetchrow(
        f"WITH {', '.join(ctes)} SELECT admission.*, instance.*, intent.*, {items} "
        "FROM admission LEFT JOIN instance ON true LEFT JOIN intent ON true",
        *params,
    )
    if row["id"] is None:
        return row, None
    written()
    return row, (instance_of(row), _intent_of(intent_values, row))


async def add_intent(
    session: AsyncSession,
    intent: Mapping[str, Any],
    *,
    generation: int,
    instance_changes: Mapping[str, Any] | None,
    events: list[dict[str, Any]],
    notify: Mapping[str, str],
    reuse: Sequence[str] = (),
) -> Intent | None:
    """A new intent (with its instance's changes, events and notifications) in one
    statement, only while the instance is still at ``generation``: None when it
    moved on meanwhile (read it again and decide again). With ``reuse`` (statuses),
    the instance's latest intent for ``generation`` in one of them, if there is one,
    is the answer instead and nothing is inserted (a repeated request)."""
    values = {"id": uuid.uuid4(), **intent}
    if instance_changes is not None:
        current, params = update_instance_sql(instance_changes, generation=generation)
    else:
        current, params = "SELECT id FROM instances WHERE id = $1 AND generation = $2", [generation]
    params = [values["instance_id"], *params]
    ctes = [f"current AS ({current})"]
    source = "current"
    if reuse:
        params += [generation, list(reuse)]
        ctes.append(_REUSED.format(g=len(params) - 1, s=len(params)))
        source = "current WHERE NOT EXISTS (SELECT FROM reused)"
    intent_sql, intent_params = _insert_sql("intents", values, len(params) + 1, source)
    params += intent_params
    ctes.append(f"inserted AS ({intent_sql} RETURNING {_INTENT_COLUMNS_SQL})")
    union = " UNION ALL SELECT * FROM reused" if reuse else ""
    ctes.append(f"intent AS (SELECT * FROM inserted{union})")
    con, appending, items, written = await _with_events(session, params, events, notify, "intent")
    row = await con.fetchrow(
        f"WITH {', '.join([*ctes, *appending])} SELECT intent.*, {items} "
        "FROM (SELECT 1) AS one LEFT JOIN intent ON true",
        *params,
    )
    if row["id"] is None:
        return None
    written()
    return Intent(**{column: row[column] for column in _INTENT_COLUMNS})


async def update_instance(
    session: AsyncSession,
    instance_id: uuid.UUID,
    values: Mapping[str, Any],
) -> bool:
    """Set ``values`` (see ``update_instance_sql``). True if the row was updated."""
    sql, params = update_instance_sql(values)
    return await (await driver(session)).fetchval(sql, instance_id, *params) is not None
