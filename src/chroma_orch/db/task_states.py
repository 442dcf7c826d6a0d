"""``runtimes.base.TaskStates`` in ``task_states``: the latest known state of each
cloud task, one row per task, shared by every replica.

A write keeps the state of the highest ``version`` (a duplicate or an older,
late event changes nothing) and stamps ``checked_at``; a read answers only states
stamped within ``max_age`` seconds (older ones are for the caller to describe
again: the safety sweep).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import (
    BigInteger,
    Float,
    String,
    Text,
    bindparam,
    case,
    cast,
    delete,
    extract,
    func,
    select,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chroma_orch.db.driver import driver
from chroma_orch.db.models import TaskState, table_of
from chroma_orch.db.statements import compiled

STATES = table_of(TaskState)
_NOW = func.clock_timestamp()
_AGE = cast(extract("epoch", _NOW - STATES.c.checked_at), Float)
"""Seconds since a state was stamped (the database's clock is the only clock)."""
_MAX_AGE = bindparam("max_age", type_=Float)
_GIVEN = (
    func.unnest(
        bindparam("keys", type_=ARRAY(String)),
        bindparam("versions", type_=ARRAY(BigInteger)),
        bindparam("docs", type_=ARRAY(Text)),
    )
    .table_valued("key", "version", "doc")
    .render_derived(name="u")
)
_INSERTED = pg_insert(STATES).from_select(
    ["key", "version", "doc", "checked_at"],
    select(_GIVEN.c.key, _GIVEN.c.version, cast(_GIVEN.c.doc, JSONB), _NOW),
)
RECORD = compiled(
    "record_task_states",
    _INSERTED.on_conflict_do_update(
        index_elements=[STATES.c.key],
        set_={
            "doc": case(
                (_INSERTED.excluded.version >= STATES.c.version, _INSERTED.excluded.doc),
                else_=STATES.c.doc,
            ),
            "version": func.greatest(STATES.c.version, _INSERTED.excluded.version),
            "checked_at": _NOW,
        },
    ),
)
"""Record ``:keys``' states (``:versions``, ``:docs`` as JSON text, one each, in one
order): a state of a lower version than the stored one changes nothing but the stamp."""
FRESH = compiled(
    "fresh_task_states",
    select(STATES.c.key, cast(STATES.c.doc, Text).label("doc")).where(
        STATES.c.key == func.any(bindparam("keys", type_=ARRAY(String))),
        _AGE < _MAX_AGE,
    ),
)
"""The states of ``:keys`` stamped within ``:max_age`` seconds."""
PRUNE = compiled("prune_task_states", delete(STATES).where(_AGE > _MAX_AGE))
"""Forget states not stamped for ``:max_age`` seconds."""


class TaskStatesInDb:
    """One statement per call; every replica reads what any replica wrote."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.sessions = sessions

    async def record(self, states: Iterable[tuple[str, int, Mapping[str, Any]]]) -> None:
        latest: dict[str, tuple[int, Mapping[str, Any]]] = {}
        for key, version, doc in states:  # one row per key and statement
            if key not in latest or version >= latest[key][0]:
                latest[key] = (version, doc)
        if not latest:
            return
        keys = sorted(latest)  # a fixed order: concurrent writers never deadlock
        versions = [latest[k][0] for k in keys]
        docs = [json.dumps(latest[k][1], default=str) for k in keys]
        async with self.sessions() as session:
            con = await driver(session, begin=False)
            await RECORD.execute(con, keys=keys, versions=versions, docs=docs)
            await session.commit()

    async def fresh(self, keys: Iterable[str], max_age: float) -> dict[str, dict[str, Any]]:
        wanted = list(keys)
        if not wanted:
            return {}
        async with self.sessions() as session:
            con = await driver(session, begin=False)
            rows = await FRESH.fetch(con, keys=wanted, max_age=float(max_age))
            await session.commit()
        return {str(row["key"]): json.loads(row["doc"]) for row in rows}

    async def prune(self, older_than: float) -> None:
        async with self.sessions() as session:
            con = await driver(session, begin=False)
            await PRUNE.execute(con, max_age=float(older_than))
            await session.commit()
