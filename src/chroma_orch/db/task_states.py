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

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chroma_orch.db.driver import driver

_RECORD = """
INSERT INTO task_states AS t (key, version, doc, checked_at)
SELECT u.key, u.version, u.doc::jsonb, clock_timestamp()
FROM unnest($1::text[], $2::bigint[], $3::text[]) AS u(key, version, doc)
ON CONFLICT (key) DO UPDATE SET
    doc = CASE WHEN excluded.version >= t.version THEN excluded.doc ELSE t.doc END,
    version = greatest(t.version, excluded.version),
    checked_at = clock_timestamp()
"""
_FRESH = """
SELECT key, doc::text AS doc FROM task_states
WHERE key = any($1::text[]) AND checked_at > clock_timestamp() - make_interval(secs => $2)
"""
_PRUNE = """
DELETE FROM task_states WHERE checked_at < clock_timestamp() - make_interval(secs => $1)
"""


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
            await con.execute(_RECORD, keys, versions, docs)
            await session.commit()

    async def fresh(self, keys: Iterable[str], max_age: float) -> dict[str, dict[str, Any]]:
        wanted = list(keys)
        if not wanted:
            return {}
        async with self.sessions() as session:
            con = await driver(session, begin=False)
            rows = await con.fetch(_FRESH, wanted, float(max_age))
            await session.commit()
        return {str(row["key"]): json.loads(row["doc"]) for row in rows}

    async def prune(self, older_than: float) -> None:
        async with self.sessions() as session:
            con = await driver(session, begin=False)
            await con.execute(_PRUNE, float(older_than))
            await session.commit()
