"""The reconciler's status writes: one named, typed operation per thing it records.

Each is one statement, compiled once, fenced on the reconciler's lease (it writes
nothing unless this replica still holds the instance) and doing everything the
step records at once: the instance's columns (and ``updated_at``), the events,
and per operation, settling the open intents, freeing the instance's port,
reserving a guessed one, giving the lease back. The caller supplies every column
the operation lists (``FencedWrite.columns``), unchanged ones with their current
values: the reconciler owns them while it holds the lease.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    CTE,
    Integer,
    String,
    Text,
    bindparam,
    case,
    delete,
    func,
    null,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession

from chroma_orch.db.models import OPEN_INTENT, Instance, Intent, IntentStatus, table_of
from chroma_orch.db.outbox import appending, write_with_events
from chroma_orch.db.ports import ALLOCATED
from chroma_orch.db.statements import Statement, compiled, one_of

_I = table_of(Instance)
_N = table_of(Intent)
_ID = bindparam("id", type_=_I.c.id.type)
_LEASE_FREED = {"lease_owner": null(), "lease_expires_at": null(), "error_count": 0}

_SERVER = ("handle", "last_handle", "endpoint_host", "endpoint_port")
_PHASE = ("phase", "phase_changed_at")
_FAILURE = ("failure_reason", "failure_message")
_HEARTBEAT = ("heartbeat_failures", "heartbeat_failed_at")


@dataclass(frozen=True)
class Fence:
    """Who writes: the instance and the replica holding its lease."""

    instance_id: uuid.UUID
    owner: str


@dataclass(frozen=True)
class Written:
    """What a fenced write answers (None from ``run`` when the lease was lost)."""

    due: bool
    """Whether the instance is due (someone asked for more while it was leased)."""


@dataclass(frozen=True)
class FencedWrite:
    """A named status write; see the module's docstring."""

    name: str
    columns: tuple[str, ...]
    settles: bool
    frees_port: bool
    releases_lease: bool
    statement: Statement

    async def run(
        self,
        session: AsyncSession,
        fence: Fence,
        values: Mapping[str, Any],
        *,
        events: Sequence[dict[str, Any]] = (),
        settle: tuple[int, str | None] | None = None,
        alone: bool = True,
    ) -> Written | None:
        """Write ``values`` (exactly ``columns``) and ``events``; ``settle``
        (generation, error or None) for an operation that settles. ``alone``: the
        statement is the whole unit of work, so it commits by itself (no BEGIN /
        COMMIT round trips) unless the session began a transaction already; inside
        a transaction the statement stages the events for ``db.outbox.commit``."""
        if set(values) != set(self.columns):
            raise TypeError(f"{self.name} writes {self.columns}, not {tuple(values)}")
        params: dict[str, Any] = {"id": fence.instance_id, "owner": fence.owner, **values}
        if self.settles:
            assert settle is not None
            generation, error = settle
            status = IntentStatus.FAILED if error else IntentStatus.SUCCEEDED
            params |= {"settle_generation": generation, "settle_status": status, "error": error}
        row = await write_with_events(
            session, self.statement, params, events=events, begin=not alone, written="written"
        )
        if row is None or row["written"] is None:
            return None
        return Written(bool(row["due"]))


def _updated(columns: Sequence[str], releases_lease: bool, requested: Sequence[str]) -> CTE:
    values: dict[str, Any] = {name: bindparam(name, type_=_I.c[name].type) for name in columns}
    observed = bindparam("observed_generation", type_=_I.c.observed_generation.type)
    for name in requested:  # a newer request's value stands
        values[name] = case((_I.c.generation == observed, values[name]), else_=_I.c[name])
    values["updated_at"] = func.now()
    if releases_lease:
        values |= _LEASE_FREED
    return (
        update(_I)
        .where(_I.c.id == _ID, _I.c.lease_owner == bindparam("owner", type_=String))
        .values(values)
        .returning(_I.c.id, _I.c.next_reconcile_at)
        .cte("updated")
    )


def _settled(updated: CTE) -> CTE:
    """Close the open intents up to ``:settle_generation``: that generation's own
    with ``:settle_status`` (and ``:error``), older ones superseded."""
    generation = bindparam("settle_generation", type_=Integer)
    own = _N.c.target_generation == generation
    return (
        update(_N)
        .where(
            _N.c.instance_id.in_(select(updated.c.id)),
            one_of(_N.c.status, [status.value for status in OPEN_INTENT]),
            _N.c.target_generation <= generation,
        )
        .values(
            status=case(
                (own, bindparam("settle_status", type_=String)),
                else_=IntentStatus.SUPERSEDED.value,
            ),
            error=case((own, bindparam("error", type_=Text)), else_=_N.c.error),
            completed_at=func.now(),
            updated_at=func.now(),
        )
        .cte("settled")
    )


def fenced_write(
    name: str,
    columns: Sequence[str],
    *,
    settles: bool = False,
    frees_port: bool = False,
    releases_lease: bool = False,
    requested: Sequence[str] = (),
) -> FencedWrite:
    """``requested``: columns a request writes too (with a new generation), which
    this write records only while the instance is still at the generation the pass
    converged (its ``observed_generation``)."""
    assert set(requested) <= set(columns)
    assert not requested or "observed_generation" in columns
    updated = _updated(columns, releases_lease, requested)
    ctes = []
    items: list[Any] = [
        select(updated.c.id).scalar_subquery().label("written"),
        select(updated.c.next_reconcile_at.is_not(None)).scalar_subquery().label("due"),
    ]
    if settles:
        ctes.append(_settled(updated))
    if frees_port:
        freed = delete(ALLOCATED).where(ALLOCATED.c.instance_id.in_(select(updated.c.id)))
        ctes.append(freed.cte("freed"))
    events = appending(updated)
    query = select(*items, *events.items).add_cte(*ctes, *events.ctes)
    statement = compiled(name, query)
    return FencedWrite(name, tuple(columns), settles, frees_port, releases_lease, statement)


# -- the operations ---------------------------------------------------------------

RECORD_STARTING = fenced_write(
    "record_starting", (*_PHASE, *_SERVER, "start_phases", "launch_by", "launch_token")
)
"""A start begins: "starting", no server yet (a local one reserves its port as it
spawns: ``db.ports.PortReservationsInDb``). ``launch_by``: until when it may still
launch a server it has not recorded (never earlier than the row said: a start of a
replica that lost its lease may still be pending, on the same ``launch_token``: a
start on another waits for that window first)."""
END_LAUNCH = fenced_write("end_launch", ("launch_by",))
"""A start that launched nothing (no port free yet, or past its ``launch_by``): its own
window ends (``launch_by`` back to an earlier attempt's, if still ahead)."""
RECORD_HANDLE = fenced_write("record_handle", ("handle", "launch_by"))
"""The server of a start that is not ready yet (recorded: ``launch_by`` as it was
before this start, if still ahead)."""
RECORD_FOUND_SERVER = fenced_write(
    "record_found_server", (*_PHASE, "handle", "launch_by", "start_attempts", *_HEARTBEAT)
)
"""A live server no start recorded, found by the runtime's listing once the launch
window it came from was over: recorded as the instance's and "stopping" in one write
(``halt`` stops it and waits until it is gone). ``start_attempts`` moves on as with any
stop; the heartbeat count starts afresh: it was another server's, and "stopping" with
missed heartbeats is a hung server's restart."""
RECORD_START_PHASES = fenced_write("record_start_phases", ("start_phases",))
"""A start got further (a new start phase; its event goes with it)."""
FORGET_SERVER = fenced_write("forget_server", _SERVER, frees_port=True)
"""A server that lost its port to another process: gone, and the port with it."""
RECORD_STOPPING = fenced_write("record_stopping", (*_PHASE, "restart_count", "start_attempts"))
"""A stop begins: routing ends, the server drains. (The restart budget as it stands
when the server stops running: refilled if it ran long enough, for a restart of an
unresponsive server.) ``start_attempts`` moves on: a start after this stop in the same
generation (a snapshot's, on ECS with EBS) is a launch of its own, not the stopped
server's (ECS's RunTask ``clientToken``, built from it, would hand that server back,
and its exit would count as a crash: a restart each snapshot, the instance failed at
the fourth)."""
END_ROUTING = fenced_write("end_routing", ("endpoint_host", "endpoint_port"))
"""The server is going away on its own (it crashed, or the platform retires it):
routing to its address ends now, not once the runtime reports it gone (ECS with EBS:
once its volume is saved, minutes after ECS freed its IP for other tasks). The
instance stays ``running`` until then, so its exit counts as any crash."""
RECORD_SERVER_GONE = fenced_write("record_server_gone", _SERVER)
"""The server stopped (the instance's phase is written next)."""
RECORD_QUIESCED = fenced_write("record_quiesced", (*_PHASE, *_SERVER, "start_attempts"))
"""The server stopped for a snapshot's copy: the instance is ``stopping`` until the
copy is taken and the server started again (as on ECS, where a snapshot's stop is any
stop). Never ``running`` with no server, which would send its clients to nothing; and
not ``starting``, which with no server recorded is a launch that may have one writing
the data: a service killed during the copy then started the server before taking it
(a guarded upgrade's ``pre_upgrade`` snapshot held data the new version had written,
and its rollback restored that). ``stopping`` with no server resumes the quiesce:
the copy of the data at rest (unless it was complete), then the start."""
RECORD_CRASH = fenced_write(
    "record_crash",
    (
        *_PHASE,
        *_SERVER,
        *_FAILURE,
        "restart_count",
        "start_attempts",
        "capacity_waits",
        "launch_by",
    ),
)
"""A start failed or a server died; it is started again after a backoff (the restart
budget and the capacity backoff as the failure's class says). This pass's launch is
over: ``launch_by`` back to an earlier attempt's, if still ahead."""
MARK_RUNNING = fenced_write(
    "mark_running",
    (
        *_PHASE,
        *_SERVER,
        *_FAILURE,
        "observed_generation",
        "capacity_waits",
        "start_phases",
        *_HEARTBEAT,
        "undelete_unloaded",
        "launch_by",
    ),
    settles=True,
    releases_lease=True,
)
"""The server answers: running (no heartbeat missed yet), the intents settled, converged.
Routed from here, its clients may write: ``undelete_unloaded`` cleared; its server is
recorded: ``launch_by`` as it was before this pass's start, if still ahead."""
MARK_STOPPED = fenced_write(
    "mark_stopped",
    (
        *_PHASE,
        *_SERVER,
        *_FAILURE,
        "observed_generation",
        "launch_by",
        "keep_data",
        "data_kept_for_undelete",
    ),
    settles=True,
    frees_port=True,
    releases_lease=True,
    requested=("keep_data", "data_kept_for_undelete"),
)
"""Stopped (or deleted): no server, its port free, the intents settled, converged. The
launch window ends (``launch_by``: the stop listed what a start left); a delete records
whether the data stayed in place (``keep_data``: asked for, or its ``pre_delete``
snapshot failed), which an undelete goes by; not over a newer request's (a purge asked
while the delete ran: it removes the data, on its own generation). And whether it
stayed only for an undelete (``data_kept_for_undelete``: not asked for; removed once
the undelete's window has passed)."""
MARK_FAILED = fenced_write(
    "mark_failed",
    (*_PHASE, *_SERVER, *_FAILURE, "observed_generation", "launch_by"),
    settles=True,
    frees_port=True,
    releases_lease=True,
)
"""Failed for good at this generation: the intents failed, converged."""
RECORD_DATA_LOADED = fenced_write(
    "record_data_loaded", ("restore_snapshot_id", "undelete_unloaded")
)
"""The data a restore (clone, import, undelete) named is in place (or the load was given
up by a delete); the start follows."""
MARK_RESTORE_FAILED = fenced_write(
    "mark_restore_failed",
    (
        *_PHASE,
        *_SERVER,
        *_FAILURE,
        "observed_generation",
        "restore_snapshot_id",
        "undelete_unloaded",
    ),
    settles=True,
    frees_port=True,
    releases_lease=True,
)
"""The data a restore named could not be loaded (a restore's instance kept its own; an
undelete's has none: ``undelete_unloaded``, kept by a failed restore after it): failed
at this generation, the restore given up, the intents failed."""
SWITCH_SPEC = fenced_write("switch_spec", ("spec", "restart_generation", "restart_count"))
"""A guarded upgrade's switch: the instance's spec becomes the upgrade's and its server is
restarted on it (``reconciler/upgrades.py``; the request made the generation)."""
BEGIN_ROLLBACK = fenced_write(
    "begin_rollback",
    (
        "spec",
        "generation",
        "restart_generation",
        "restart_count",
        "restore_snapshot_id",
        "restore_generation",
    ),
)
"""A guarded upgrade failed: the old spec back (a new generation, which the reconciler
writes on the upgrade's behalf: the request asked for the rollback), and the
``pre_upgrade`` data restored before the next start."""
END_UPGRADE = fenced_write("end_upgrade", ("upgrade_id", *_FAILURE))
"""A guarded upgrade is over (``UpgradeRolledBack`` with what differed, after a rollback)."""
