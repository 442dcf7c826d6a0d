"""Instance and intent rows read and written by lifecycle requests.

These are the statements every lifecycle request runs, so they are compiled once
(``db/statements.py``) and sent with the driver (``db/driver.py``), and a
request's write travels as one statement with its intent, events and
notifications (committing by itself when nothing else in the unit of work began a
transaction). Rows come back as transient ``Instance`` and ``Intent`` objects (not
in the session: changing one changes nothing in the database).
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from typing import Any

import asyncpg
from sqlalchemy import (
    CTE,
    Boolean,
    ColumnElement,
    Select,
    String,
    and_,
    any_,
    bindparam,
    exists,
    func,
    insert,
    literal,
    select,
    true,
    union_all,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY, UUID
from sqlalchemy.ext.asyncio import AsyncSession

from chroma_orch.db.driver import driver, fetchrow_begun
from chroma_orch.db.models import Instance, Intent, due_now, loaded, table_of
from chroma_orch.db.outbox import INTENTS_CHANNEL, appending, notify_on_commit, write_with_events
from chroma_orch.db.statements import Statement, compiled

INSTANCES = table_of(Instance)
INTENTS = table_of(Intent)
_INSTANCE_COLUMNS = tuple(INSTANCES.columns.keys())
_INTENT_COLUMNS = tuple(INTENTS.columns.keys())


def instance_of(row: Mapping[Any, Any]) -> Instance:
    """The instance in ``row`` (which may carry other columns beside its own)."""
    return loaded(Instance, {column: row[column] for column in _INSTANCE_COLUMNS})


def _intent_of(row: asyncpg.Record) -> Intent:
    return loaded(Intent, {column: row[column] for column in _INTENT_COLUMNS})


_FETCH = compiled("fetch_instance", select(INSTANCES).where(INSTANCES.c.id == bindparam("id")))
_FETCH_FOR_UPDATE = compiled(
    "fetch_instance_for_update",
    select(INSTANCES).where(INSTANCES.c.id == bindparam("id")).with_for_update(),
)


async def fetch_instance(
    session: AsyncSession, instance_id: uuid.UUID, *, for_update: bool = False
) -> Instance | None:
    if for_update:
        row = await fetchrow_begun(session, _FETCH_FOR_UPDATE, id=instance_id)
    else:
        row = await _FETCH.fetchrow(await driver(session, begin=False), id=instance_id)
    return None if row is None else instance_of(row)


def _values(table: Any, columns: Sequence[str], prefix: str = "") -> list[Any]:
    """A bind parameter for each of ``columns``, typed as the column."""
    return [bindparam(prefix + name, type_=table.c[name].type) for name in columns]


_NEW_INSTANCE = (
    "id", "tenant_id", "name", "runtime", "spec", "desired_state", "phase", "generation",
    "observed_generation", "restart_generation", "restart_count", "error_count",
    "keep_data", "idle_timeout_seconds", "wake_on_request", "restore_snapshot_id",
    "restore_generation", "labels",
)  # fmt: skip
"""The columns a new instance is written with (the others have server defaults)."""
_NEW_INTENT = (
    "id", "instance_id", "tenant_id", "action", "target_generation", "status",
    "completed_at", "idempotency_key", "request_hash", "attempts",
)  # fmt: skip
"""The columns a new intent is written with; their parameters are ``intent_<name>``."""


def create_instance_statement(name: str, admission: Select[Any]) -> Statement:
    """The statement writing a new instance, its first intent, its events and
    notifications, only if ``admission`` (one row with a boolean ``admitted``)
    admits it. Answers the admission row, and the new rows (NULL if refused)."""
    admitted = admission.cte("admission")
    instance = (
        insert(INSTANCES)
        .from_select(
            _NEW_INSTANCE, select(*_values(INSTANCES, _NEW_INSTANCE)).where(admitted.c.admitted)
        )
        .returning(*INSTANCES.c)
        .cte("instance")
    )
    intent = (
        insert(INTENTS)
        .from_select(
            _NEW_INTENT,
            select(*_values(INTENTS, _NEW_INTENT, "intent_")).select_from(instance),
        )
        .returning(
            INTENTS.c.created_at.label("intent_created_at"),
            INTENTS.c.updated_at.label("intent_updated_at"),
        )
        .cte("intent")
    )
    events = appending(instance)
    query = (
        select(admitted, instance, intent, *events.items)
        .select_from(admitted)
        .outerjoin(instance, true())
        .outerjoin(intent, true())
        .add_cte(*events.ctes)
    )
    return compiled(name, query)


async def insert_instance(
    session: AsyncSession,
    statement: Statement,
    values: Mapping[str, Any],
    intent: Mapping[str, Any],
    *,
    admission: Mapping[str, Any],
    events: list[dict[str, Any]],
    notify: Mapping[str, str],
) -> tuple[asyncpg.Record, tuple[Instance, Intent] | None]:
    """A new instance (``values`` with its ``id``) and its first intent (without
    ``instance_id``), its events and notifications, in one ``statement``
    (``create_instance_statement``) with the ``admission`` parameters. Returns the
    admission row, and the new rows unless refused."""
    intent_values = {"id": uuid.uuid4(), "instance_id": values["id"], **intent}
    params = {**admission, **values, **{f"intent_{k}": v for k, v in intent_values.items()}}
    row = await _write_with_events(session, statement, params, events, notify)
    if row["id"] is None:
        return row, None
    created = loaded(
        Intent,
        intent_values
        | {
            "error": None,
            "created_at": row["intent_created_at"],
            "updated_at": row["intent_updated_at"],
        },
    )
    return row, (instance_of(row), created)


async def _write_with_events(
    session: AsyncSession,
    statement: Statement,
    params: Mapping[str, Any],
    events: list[dict[str, Any]],
    notify: Mapping[str, str],
) -> Mapping[str, Any]:
    """``write_with_events`` for a statement that answers one row, ``id`` None when
    it did not write."""
    row = await write_with_events(session, statement, params, events=events, notify=notify)
    assert row is not None
    return row


# -- a new intent for an existing instance -------------------------------------

_AT_GENERATION = and_(
    INSTANCES.c.id == bindparam("instance_id"), INSTANCES.c.generation == bindparam("generation")
)
_CHANGE = {
    "desired_state": bindparam("desired_state", type_=String),
    "generation": bindparam("new_generation", type_=INSTANCES.c.generation.type),
    "culled_at": bindparam("culled_at", type_=INSTANCES.c.culled_at.type),
    "restart_generation": func.coalesce(
        bindparam("restart_generation", type_=INSTANCES.c.restart_generation.type),
        INSTANCES.c.restart_generation,
    ),
    "restart_count": func.coalesce(
        bindparam("restart_count", type_=INSTANCES.c.restart_count.type),
        INSTANCES.c.restart_count,
    ),
    "keep_data": func.coalesce(bindparam("keep_data", type_=Boolean), INSTANCES.c.keep_data),
    "data_kept_for_undelete": func.coalesce(
        bindparam("data_kept_for_undelete", type_=Boolean), INSTANCES.c.data_kept_for_undelete
    ),
    "restore_snapshot_id": func.coalesce(
        bindparam("restore_snapshot_id", type_=INSTANCES.c.restore_snapshot_id.type),
        INSTANCES.c.restore_snapshot_id,
    ),
    "restore_generation": func.coalesce(
        bindparam("restore_generation", type_=INSTANCES.c.restore_generation.type),
        INSTANCES.c.restore_generation,
    ),
    "upgrade_id": func.coalesce(
        bindparam("upgrade_id", type_=INSTANCES.c.upgrade_id.type), INSTANCES.c.upgrade_id
    ),
    "spec": func.coalesce(bindparam("spec", type_=INSTANCES.c.spec.type), INSTANCES.c.spec),
}
"""A desired-state change (``restart_generation``, ``restart_count``, ``keep_data``,
``data_kept_for_undelete``, ``restore_snapshot_id``, ``restore_generation``,
``upgrade_id`` and ``spec`` kept when NULL)."""


def _current(change: bool, touch: bool) -> CTE:
    """The instance, still at ``:generation``: changed (and due), made due, or read."""
    if not (change or touch):
        return select(INSTANCES.c.id).where(_AT_GENERATION).cte("current")
    values: dict[str, Any] = {"next_reconcile_at": func.now(), "updated_at": func.now()}
    if change:
        values |= _CHANGE
    return (update(INSTANCES).where(_AT_GENERATION).values(values).returning(INSTANCES.c.id)).cte(
        "current"
    )


def _add_intent_statement(name: str, *, change: bool, touch: bool, reuse: bool) -> Statement:
    """A new intent after ``_current``; with ``reuse``, the instance's latest intent
    for ``:generation`` in one of ``:reuse`` (statuses) instead, if there is one."""
    current = _current(change, touch)
    source = select(*_values(INTENTS, _NEW_INTENT, "intent_")).select_from(current)
    reused = None
    if reuse:
        reused = (
            select(INTENTS)
            .where(
                INTENTS.c.instance_id == bindparam("instance_id"),
                INTENTS.c.target_generation == bindparam("generation"),
                INTENTS.c.status == func.any(bindparam("reuse", type_=ARRAY(String))),
                exists(select(current.c.id)),
            )
            .order_by(INTENTS.c.created_at.desc())
            .limit(1)
            .cte("reused")
        )
        source = source.where(~exists(select(literal(1)).select_from(reused)))
    inserted = (
        insert(INTENTS).from_select(_NEW_INTENT, source).returning(*INTENTS.c).cte("inserted")
    )
    answers: Any = select(inserted)
    if reused is not None:
        answers = union_all(answers, select(reused))
    intent = answers.cte("intent")
    events = appending(intent)
    one = select(literal(1).label("one")).subquery("one")
    query = select(intent, *events.items).select_from(one).outerjoin(intent, true())
    return compiled(name, query.add_cte(*events.ctes))


_ADD_INTENT = {
    (True, True): _add_intent_statement("intent_changed", change=True, touch=True, reuse=False),
    (False, True): _add_intent_statement("intent_repeated", change=False, touch=True, reuse=True),
    (False, False): _add_intent_statement(
        "intent_converged", change=False, touch=False, reuse=True
    ),
}
"""(a change, the instance made due) for each kind of request ``add_intent`` writes."""


async def add_intent(
    session: AsyncSession,
    intent: Mapping[str, Any],
    *,
    generation: int,
    change: Mapping[str, Any] | None,
    due: bool,
    events: list[dict[str, Any]],
    notify: Mapping[str, str],
    reuse: Sequence[str] = (),
) -> Intent | None:
    """A new intent (with its instance's desired-state ``change`` — the ``_CHANGE``
    parameters — or with ``due``, the instance only made due; its events and
    notifications) in one statement, only while the instance is still at
    ``generation``: None when it moved on meanwhile (read it again and decide
    again). Without a change, the instance's latest intent for ``generation`` in
    one of ``reuse`` (statuses), if there is one, is the answer instead and nothing
    is inserted (a repeated request)."""
    statement = _ADD_INTENT[(change is not None, due or change is not None)]
    params: dict[str, Any] = {"generation": generation, "instance_id": intent["instance_id"]}
    params |= {f"intent_{k}": v for k, v in {"id": uuid.uuid4(), **intent}.items()}
    if change is not None:
        params |= {
            "restart_generation": None,
            "restart_count": None,
            "keep_data": None,
            "data_kept_for_undelete": None,
            "restore_snapshot_id": None,
            "restore_generation": None,
            "upgrade_id": None,
            "spec": None,
        }
        params |= change
    else:
        params["reuse"] = list(reuse)
    row = await _write_with_events(session, statement, params, events, notify)
    return None if row["id"] is None else _intent_of(row)


class KEEP:
    """A setting ``update_settings`` leaves as it is."""


async def update_settings(
    session: AsyncSession,
    instance_id: uuid.UUID,
    idle_timeout_seconds: int | None | type[KEEP] = KEEP,
    wake_on_request: bool | type[KEEP] = KEEP,
    labels: Mapping[str, str] | type[KEEP] = KEEP,
) -> None:
    """Change an instance's settings that need no restart (``KEEP``: unchanged)."""
    values: dict[Any, Any] = {INSTANCES.c.updated_at: func.now()}
    if idle_timeout_seconds is not KEEP:
        values[INSTANCES.c.idle_timeout_seconds] = idle_timeout_seconds
    if wake_on_request is not KEEP:
        values[INSTANCES.c.wake_on_request] = wake_on_request
    if labels is not KEEP:
        values[INSTANCES.c.labels] = dict(labels)  # type: ignore[arg-type]
    await session.execute(update(INSTANCES).where(INSTANCES.c.id == instance_id).values(values))


_MAKE_DUE = compiled(
    "make_due",
    update(INSTANCES)
    .where(INSTANCES.c.id == any_(bindparam("ids", type_=ARRAY(UUID(as_uuid=True)))))
    .values(next_reconcile_at=due_now()),
)


async def make_due(
    session: AsyncSession, ids: Collection[uuid.UUID], *, wake_replicas: bool = True
) -> None:
    """The reconciler looks at these instances at once (never later than it would
    have), in ``session``'s transaction. ``wake_replicas``: notify every replica's
    work loop on commit, for a writer outside the reconciler (a replica's own
    reconciler wakes its loop itself). Not a change of the instance: ``updated_at``
    stays."""
    if not ids:
        return
    await _MAKE_DUE.execute(await driver(session), ids=list(ids))
    if wake_replicas:
        notify_on_commit(session, INTENTS_CHANNEL, str(next(iter(ids))))


def asked_for(instance_id: uuid.UUID, generation: int) -> ColumnElement[bool]:
    """The intents that asked for the instance's ``generation`` (none for one the
    reconciler made: an upgrade's rollback)."""
    return and_(Intent.instance_id == instance_id, Intent.target_generation == generation)


def first_asked(instance_id: uuid.UUID, generation: int) -> ColumnElement[datetime]:
    """When the instance's ``generation`` was first asked for (its first intent's
    ``created_at``: the request's transaction wrote what it took with it, such as a
    delete's ``pre_delete`` snapshot); NULL once its intents are purged, or for a
    generation no request made."""
    return (
        select(func.min(Intent.created_at))
        .where(asked_for(instance_id, generation))
        .scalar_subquery()
    )


def load_generation(instance: Instance) -> int:
    """The generation whose request asked for the instance's pending load (its
    current one for a row from before ``restore_generation`` was kept)."""
    return instance.restore_generation or instance.generation


async def generation_action(
    session: AsyncSession, instance_id: uuid.UUID, generation: int
) -> str | None:
    """The action that asked for the instance's ``generation`` (its newest intent
    for it), or None (``asked_for``)."""
    action: str | None = await session.scalar(
        select(Intent.action)
        .where(asked_for(instance_id, generation))
        .order_by(Intent.created_at.desc())
        .limit(1)
    )
    return action
