"""ORM models. Tables are created only by Alembic migrations, never ``create_all``."""

from __future__ import annotations

import enum
import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    DateTime,
    Double,
    ForeignKey,
    Identity,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    column,
    func,
    inspect,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    # Server-side defaults (timestamps) come back in the INSERT's RETURNING.
    __mapper_args__ = {"eager_defaults": True}
    type_annotation_map = {dict[str, Any]: JSONB, datetime: DateTime(timezone=True)}


def _uuid() -> uuid.UUID:
    return uuid.uuid4()


class TimestampMixin:
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now(), onupdate=func.now())


class Tenant(TimestampMixin, Base):
    __tablename__ = "tenants"
    __table_args__ = (
        # The instance list's search by a prefix of the tenant's name.
        Index("ix_tenants_name_prefix", "name", postgresql_ops={"name": "varchar_pattern_ops"}),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=_uuid)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    idle_timeout_seconds: Mapped[int | None] = mapped_column(Integer)
    """Stop this tenant's instances after this long without proxied traffic."""
    plan: Mapped[str | None] = mapped_column(ForeignKey("plans.name", ondelete="RESTRICT"))
    """The plan its instances' specs are checked against (NULL: the service's default
    plan, ``settings.specs``)."""


class Plan(Base):
    """What a tenant may run: the spec its instances get by default, the ranges a spec
    may take, and its quota on CPU and memory over all its live instances
    (``domain/plans.py`` reads ``definition``)."""

    __tablename__ = "plans"

    name: Mapped[str] = mapped_column(String(63), primary_key=True)
    definition: Mapped[dict[str, Any]] = mapped_column(JSONB)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now(), onupdate=func.now())


class ApiToken(Base):
    __tablename__ = "api_tokens"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=_uuid)
    tenant_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(63))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    scopes: Mapped[list[str]] = mapped_column(JSONB)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    last_used_at: Mapped[datetime | None]
    expires_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]


class Instance(TimestampMixin, Base):
    __tablename__ = "instances"
    __table_args__ = (
        # A name is unique among a tenant's live instances; deleted ones keep their row.
        Index(
            "uq_instances_tenant_name_live",
            "tenant_id",
            "name",
            unique=True,
            postgresql_where=text("desired_state <> 'deleted'"),
        ),
        Index("ix_instances_due", "next_reconcile_at"),
        Index(
            "ix_instances_leased",
            "lease_owner",
            postgresql_where=text("lease_owner IS NOT NULL"),
        ),
        Index(
            "ix_instances_missed",
            "id",
            postgresql_where=text("heartbeat_failures > 0"),
        ),
        Index(
            "ix_instances_restoring",
            "restore_snapshot_id",
            postgresql_where=text("restore_snapshot_id IS NOT NULL"),
        ),
        Index(
            "ix_instances_deleted",
            "phase_changed_at",
            postgresql_where=text("phase = 'deleted'"),
        ),
        Index(
            "ix_instances_snapshot_due",
            "next_snapshot_at",
            postgresql_where=text("next_snapshot_at IS NOT NULL"),
        ),
        Index(
            "ix_instances_unscheduled",
            "tenant_id",
            postgresql_where=text("next_snapshot_at IS NULL AND desired_state <> 'deleted'"),
        ),
        # The list's pages (db/instance_list.py): creation order, per tenant, per phase,
        # and a prefix of the name.
        Index("ix_instances_created", "created_at", "id"),
        Index("ix_instances_tenant_created", "tenant_id", "created_at", "id"),
        Index("ix_instances_phase_created", "phase", "created_at", "id"),
        Index("ix_instances_name_prefix", "name", postgresql_ops={"name": "varchar_pattern_ops"}),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=_uuid)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="RESTRICT"))
    name: Mapped[str] = mapped_column(String(63))
    runtime: Mapped[str] = mapped_column(String(16))
    spec: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    """The server's spec (``runtimes.base.ServerSpec`` as JSON, every field resolved):
    size, Chroma version, server settings. Changing it is a new generation."""
    labels: Mapped[dict[str, str]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    """The tenant's or the operator's key/value labels (rollout selectors match them)."""
    upgrade_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("instance_upgrades.id", use_alter=True, ondelete="SET NULL")
    )
    """The instance's open guarded upgrade (``reconciler/upgrades.py``), else NULL."""
    desired_state: Mapped[str] = mapped_column(String(16))
    phase: Mapped[str] = mapped_column(String(16))
    generation: Mapped[int] = mapped_column(Integer, default=1)
    observed_generation: Mapped[int] = mapped_column(Integer, default=0)
    restart_generation: Mapped[int] = mapped_column(Integer, default=0)
    """Generation of the latest restart request; the server is restarted until its
    handle's generation reaches it."""
    keep_data: Mapped[bool] = mapped_column(default=False)
    handle: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    last_handle: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    """The handle of the last server once it is gone: its logs stay readable (a failed
    ECS task's CloudWatch stream says why it failed)."""
    endpoint_host: Mapped[str | None] = mapped_column(String(255))
    endpoint_port: Mapped[int | None] = mapped_column(Integer)
    failure_reason: Mapped[str | None] = mapped_column(String(64))
    failure_message: Mapped[str | None] = mapped_column(Text)
    restart_count: Mapped[int] = mapped_column(Integer, default=0)
    """Crashes in quick succession (the restart budget): refilled once a server has run
    for ``reconciler.restart_budget_reset``, reset by a start or restart request."""
    start_attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    """Start attempts ever made (every kind of failure counts): names each attempt's
    idempotency token (ECS ``clientToken``), which the budget's refill must not repeat."""
    capacity_waits: Mapped[int] = mapped_column(Integer, server_default="0")
    """Starts in a row that waited on the platform: found no capacity (or a
    rate-limited image pull), or had their task stopped by AWS before it ever ran. The
    exponent of the capacity backoff (and of the short backoff of those AWS stops); 0
    once a server runs."""
    start_phases: Mapped[dict[str, str] | None] = mapped_column(JSONB)
    """How far the latest start got: each start phase reached (``runtimes.base.StartPhase``)
    with when, as ISO 8601 times; emptied as a start attempt begins (NULL: none yet)."""
    heartbeat_failures: Mapped[int] = mapped_column(Integer, server_default="0")
    """Heartbeats the running server missed in a row (``reconciler/heartbeat.py``); at
    ``heartbeat.failures`` the server is restarted as Unresponsive. 0 once one answers
    and whenever a server becomes running."""
    heartbeat_failed_at: Mapped[datetime | None]
    """When the last missed heartbeat was counted."""
    error_count: Mapped[int] = mapped_column(Integer, default=0)
    phase_changed_at: Mapped[datetime] = mapped_column(server_default=func.now())
    next_reconcile_at: Mapped[datetime | None] = mapped_column(server_default=func.now())
    """When the reconciler should next look; NULL while nothing is due."""
    lease_owner: Mapped[str | None] = mapped_column(String(128))
    lease_expires_at: Mapped[datetime | None]
    last_activity_at: Mapped[datetime | None]
    idle_timeout_seconds: Mapped[int | None] = mapped_column(Integer)
    """Overrides the tenant's idle timeout; 0 never culls this instance."""
    wake_on_request: Mapped[bool] = mapped_column(default=False, server_default=text("false"))
    culled_at: Mapped[datetime | None]
    """Set when the culler stopped the instance for idleness; cleared by any request."""
    restore_snapshot_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("snapshots.id", use_alter=True)
    )
    """Data to load before the next start (a restore, a clone, an import, an undelete);
    the reconciler clears it once the data is in place. A snapshot named here cannot
    be deleted."""
    restore_generation: Mapped[int | None] = mapped_column(Integer)
    """The generation whose request asked for the load ``restore_snapshot_id`` names
    (its action, and its ``pre_restore`` snapshot), however many came after it while
    it waited (a stop, a restart); left as it was once the load is done."""
    launch_by: Mapped[datetime | None]
    """Until when a start that recorded "starting" may still launch a server it has not
    recorded (its runtime's ``launch_budget`` after it; never moved earlier by another
    start; back to an earlier attempt's, or None, once a start recorded its server). A
    stop or delete of an instance with no server recorded waits for it (and the
    runtime's ``visibility_grace``) before it trusts the runtime's listing."""
    launch_token: Mapped[str | None] = mapped_column(Text)
    """The start token of the start that wrote ``launch_by`` (meaningful while that is
    ahead). A start on another token waits for that window and stops what it left
    before it launches: the runtime would answer the other token with a server of its
    own (ECS: a second task, on a volume of its own)."""
    undelete_unloaded: Mapped[bool] = mapped_column(server_default=text("false"))
    """An undelete's load failed and no server has run since: the instance has no data
    (the ``pre_delete`` snapshot it was undeleted from holds it), and a delete takes no
    ``pre_delete`` snapshot of it. Cleared once a server runs (is routed: clients may
    write) or a load succeeds."""
    data_kept_for_undelete: Mapped[bool] = mapped_column(server_default=text("false"))
    """The delete kept the data in place though ``keep_data`` was not asked for: its
    ``pre_delete`` snapshot failed, and the data stays for an undelete. Past the
    retention of deleted instances it is removed as a purge removes it
    (``reconciler/kept_data_expiry.py``), and only then does the row go. Data kept on
    request stays."""
    next_snapshot_at: Mapped[datetime | None]
    """When the instance's snapshot schedule (its own, else its tenant's) takes its next
    ``scheduled`` snapshot; NULL while no schedule applies (``db/snapshot_schedules.py``)."""


class IntentStatus(enum.StrEnum):
    """Where an intent stands: open (pending, then in progress once the reconciler
    has claimed its instance) until the reconciler settles it (succeeded, failed,
    or superseded by a later intent of the same instance)."""

    PENDING = "pending"
    IN_PROGRESS = "in_progress"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SUPERSEDED = "superseded"


OPEN_INTENT = (IntentStatus.PENDING, IntentStatus.IN_PROGRESS)
"""Statuses of an intent the reconciler has yet to settle."""


class Intent(Base):
    __tablename__ = "intents"
    __table_args__ = (
        Index(
            "uq_intents_tenant_idempotency_key",
            "tenant_id",
            "idempotency_key",
            unique=True,
            postgresql_where=text("idempotency_key IS NOT NULL"),
        ),
        Index(
            "ix_intents_open",
            "instance_id",
            postgresql_where=column("status").in_([status.value for status in OPEN_INTENT]),
        ),
        Index("ix_intents_instance_generation", "instance_id", "target_generation"),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=_uuid)
    instance_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("instances.id", ondelete="CASCADE"))
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    action: Mapped[str] = mapped_column(String(16))
    target_generation: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), default=IntentStatus.PENDING.value)
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    request_hash: Mapped[str | None] = mapped_column(String(64))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now(), onupdate=func.now())
    completed_at: Mapped[datetime | None]


class AllocatedPort(Base):
    __tablename__ = "allocated_ports"

    port: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    instance_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("instances.id", ondelete="CASCADE"), unique=True
    )
    allocated_at: Mapped[datetime] = mapped_column(server_default=func.now())


class ReleasedEndpoint(Base):
    """An address (host, port) an instance's server left, and when: written only by a
    trigger on ``instances`` (migration 0006). The data plane routes no other instance
    there until the quarantine has passed."""

    __tablename__ = "released_endpoints"

    host: Mapped[str] = mapped_column(String(255), primary_key=True)
    port: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    instance_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    released_at: Mapped[datetime] = mapped_column(server_default=func.clock_timestamp())


class ApiRateBucket(Base):
    """A token bucket shared by every replica: a cloud API budget that the provider
    counts per account, not per caller (``db/rate_buckets.py``). ``tokens`` may be
    negative: callers reserve tokens and wait until the refill has paid them."""

    __tablename__ = "api_rate_buckets"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    tokens: Mapped[float] = mapped_column(Double)
    updated_at: Mapped[datetime] = mapped_column(server_default=func.clock_timestamp())


class TaskState(Base):
    """The latest known state of one cloud task (an ECS task, by ARN), shared by every
    replica (``db/task_states.py``): written from state-change events and from
    describes, replaced only by a state of a higher or equal ``version``."""

    __tablename__ = "task_states"
    __table_args__ = (Index("ix_task_states_checked_at", "checked_at"),)

    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    version: Mapped[int] = mapped_column(BigInteger)
    doc: Mapped[dict[str, Any]] = mapped_column(JSONB)
    checked_at: Mapped[datetime] = mapped_column(server_default=func.clock_timestamp())


class SnapshotKind(enum.StrEnum):
    """Why a snapshot was taken: manual (asked for), scheduled, pre_delete (an undelete
    restores it), pre_upgrade, pre_restore (restoring it undoes a restore), import."""

    MANUAL = "manual"
    """Asked for through the API."""
    SCHEDULED = "scheduled"
    """Taken by a snapshot schedule; pruned by its ``keep``."""
    PRE_DELETE = "pre_delete"
    """Taken as the instance was deleted: what an undelete restores."""
    PRE_UPGRADE = "pre_upgrade"
    """Taken before an upgrade of the instance's server."""
    PRE_RESTORE = "pre_restore"
    """The data a restore replaced: restoring it undoes the restore."""
    IMPORT = "import"
    """An archive uploaded to create an instance from."""


class SnapshotPhase(enum.StrEnum):
    """Where a snapshot stands: pending, then running, then ready or failed; deleting
    while a DELETE removes it."""

    # the allowed changes: domain/snapshot_states.py

    PENDING = "pending"
    RUNNING = "running"
    READY = "ready"
    FAILED = "failed"
    DELETING = "deleting"


OPEN_SNAPSHOT = (SnapshotPhase.PENDING, SnapshotPhase.RUNNING, SnapshotPhase.DELETING)
"""Phases the reconciler has yet to carry out (the partial index ``ix_snapshots_open``)."""


class Snapshot(Base):
    """An instance's data at one moment, as an archive in the snapshot store (or a
    runtime's own snapshot, e.g. of an EBS volume). Written ``pending`` by the API,
    carried out by the reconciler under its instance's lease (``domain/snapshot_states.py``)."""

    __tablename__ = "snapshots"
    __table_args__ = (
        Index("ix_snapshots_instance_created", "instance_id", "created_at"),
        Index(
            "ix_snapshots_open",
            "instance_id",
            "created_at",
            postgresql_where=text("phase IN ('pending', 'running', 'deleting')"),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=_uuid)
    instance_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("instances.id", ondelete="CASCADE"))
    tenant_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), index=True
    )
    kind: Mapped[str] = mapped_column(String(16))
    phase: Mapped[str] = mapped_column(String(16))
    failure_reason: Mapped[str | None] = mapped_column(String(64))
    failure_message: Mapped[str | None] = mapped_column(Text)
    size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    checksum: Mapped[str | None] = mapped_column(String(64))
    """SHA-256 (hex) of the archive as stored."""
    chroma_version: Mapped[str | None] = mapped_column(String(32))
    store: Mapped[str] = mapped_column(String(16))
    """Where it lives: ``local`` or ``s3`` (an archive), ``ebs`` (an EBS snapshot)."""
    location: Mapped[str | None] = mapped_column(Text)
    """The store's key of the archive, or the runtime's snapshot id."""
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    started_at: Mapped[datetime | None]
    completed_at: Mapped[datetime | None]
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now(), onupdate=func.now())


class SnapshotSchedule(Base):
    """Scheduled snapshots of a tenant's instances (``instance_id`` NULL) or of one
    instance (which overrides its tenant's): one every ``every_seconds``, the newest
    ``keep`` ready ones kept."""

    __tablename__ = "snapshot_schedules"
    __table_args__ = (
        Index(
            "uq_snapshot_schedules_tenant",
            "tenant_id",
            unique=True,
            postgresql_where=text("instance_id IS NULL"),
        ),
        Index(
            "uq_snapshot_schedules_instance",
            "instance_id",
            unique=True,
            postgresql_where=text("instance_id IS NOT NULL"),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=_uuid)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    instance_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("instances.id", ondelete="CASCADE")
    )
    every_seconds: Mapped[int] = mapped_column(Integer)
    keep: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now(), onupdate=func.now())


class UpgradePhase(enum.StrEnum):
    """Where a guarded upgrade stands (the allowed changes: ``domain/upgrade_states.py``)."""

    PENDING = "pending"
    """Asked for; the parity probe's baseline is taken from the running server next."""
    UPGRADING = "upgrading"
    """The ``pre_upgrade`` snapshot is taken and the server restarted on the new spec."""
    PROBING = "probing"
    """The new server runs: the parity probe compares it with the baseline."""
    ROLLING_BACK = "rolling_back"
    """The upgrade failed: the old spec and the ``pre_upgrade`` data are restored."""
    SUCCEEDED = "succeeded"
    ROLLED_BACK = "rolled_back"
    CANCELLED = "cancelled"
    """The instance was deleted (or the upgrade given up) before it ended."""


OPEN_UPGRADE = (UpgradePhase.PENDING, UpgradePhase.UPGRADING, UpgradePhase.PROBING,
                UpgradePhase.ROLLING_BACK)  # fmt: skip
"""Phases of an upgrade still under way (at most one per instance)."""


class InstanceUpgrade(Base):
    """One guarded upgrade of one instance's server: from one spec to another, with a
    ``pre_upgrade`` snapshot and a parity probe, rolled back when the probe differs."""

    __tablename__ = "instance_upgrades"
    __table_args__ = (
        Index(
            "uq_instance_upgrades_open",
            "instance_id",
            unique=True,
            postgresql_where=text("phase IN ('pending', 'upgrading', 'probing', 'rolling_back')"),
        ),
        Index("ix_instance_upgrades_instance_created", "instance_id", "created_at"),
        Index("ix_instance_upgrades_rollout", "rollout_id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=_uuid)
    instance_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("instances.id", ondelete="CASCADE"))
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    rollout_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("rollouts.id", ondelete="SET NULL")
    )
    phase: Mapped[str] = mapped_column(String(16))
    from_spec: Mapped[dict[str, Any]] = mapped_column(JSONB)
    to_spec: Mapped[dict[str, Any]] = mapped_column(JSONB)
    snapshot_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("snapshots.id", ondelete="SET NULL")
    )
    """The ``pre_upgrade`` snapshot (what a rollback restores)."""
    baseline: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    """What the parity probe recorded from the old server."""
    differences: Mapped[list[Any] | None] = mapped_column(JSONB)
    """What the probe found different on the new server (a rollback says why)."""
    failure_reason: Mapped[str | None] = mapped_column(String(64))
    failure_message: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    started_at: Mapped[datetime | None]
    """When the server was first stopped for it (downtime starts)."""
    switched_at: Mapped[datetime | None]
    """When the instance's spec became ``to_spec`` (a new generation)."""
    completed_at: Mapped[datetime | None]
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now(), onupdate=func.now())


class Rollout(Base):
    """A fleet operation in waves: an upgrade of the selected instances to one Chroma
    version, or a rolling restart of them (``domain/rollouts.py``,
    ``reconciler/rollouts.py``). ``request`` keeps what was asked (selector, waves,
    pause, error budget, concurrency)."""

    __tablename__ = "rollouts"
    __table_args__ = (
        Index(
            "ix_rollouts_active",
            "next_step_at",
            postgresql_where=text("state IN ('pending', 'running')"),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=_uuid)
    kind: Mapped[str] = mapped_column(String(16))
    """``upgrade`` or ``restart``."""
    state: Mapped[str] = mapped_column(String(16))
    """pending, running, paused, halted, succeeded, cancelled."""
    request: Mapped[dict[str, Any]] = mapped_column(JSONB)
    current_wave: Mapped[int] = mapped_column(Integer, server_default="0")
    next_step_at: Mapped[datetime | None] = mapped_column(server_default=func.now())
    """When the rollout loop should look at it next (a wave's pause ends)."""
    message: Mapped[str | None] = mapped_column(Text)
    """Why it halted (or was cancelled)."""
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now(), onupdate=func.now())
    completed_at: Mapped[datetime | None]


class RolloutMember(Base):
    """One instance of a rollout: the wave it belongs to, chosen when the rollout was
    created, and how it went."""

    __tablename__ = "rollout_members"
    __table_args__ = (Index("ix_rollout_members_wave", "rollout_id", "wave", "state"),)

    rollout_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("rollouts.id", ondelete="CASCADE"), primary_key=True
    )
    instance_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("instances.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    wave: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16))
    """waiting, active, succeeded, rolled_back, failed, skipped."""
    upgrade_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("instance_upgrades.id", ondelete="SET NULL")
    )
    target_generation: Mapped[int | None] = mapped_column(Integer)
    """A restart's generation: done once the instance observed it running."""
    message: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime | None]
    completed_at: Mapped[datetime | None]


class Event(Base):
    __tablename__ = "events"
    __table_args__ = (
        # the fleet view's reads (db/fleet.py): starts that reached running, failures,
        # and an instance's lifecycle events in order
        Index(
            "ix_events_running",
            "created_at",
            postgresql_where=text(
                "type = 'instance.phase_changed' AND (after ->> 'phase') = 'running'"
            ),
        ),
        Index(
            "ix_events_failures",
            "created_at",
            postgresql_where=text("type IN ('instance.failed', 'instance.crashed')"),
        ),
        Index(
            "ix_events_lifecycle",
            "instance_id",
            "seq",
            postgresql_where=text(
                "type IN ('instance.created', 'instance.desired_changed', 'instance.phase_changed')"
            ),
        ),
    )

    seq: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    instance_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True), index=True)
    tenant_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True), index=True)
    type: Mapped[str] = mapped_column(String(64))
    before: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    after: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())


_M = TypeVar("_M", bound=Base)


def loaded(model: type[_M], values: Mapping[str, Any]) -> _M:
    """A transient ``model`` object holding ``values`` (every column) as the ORM
    holds what it loads: in the object's state, with no change recorded. The
    constructor records each attribute as a change, through the attribute events,
    at about fifteen times the CPU (33 against 2 microseconds for an instance
    row). For copies of rows read with the driver; never added to a session."""
    obj = inspect(model).class_manager.new_instance()
    assert isinstance(obj, model)
    obj.__dict__.update(values)
    return obj


def table_of(model: type[Base]) -> Table:
    """The Core table of ``model``, for statements written against its columns."""
    table = model.__table__
    assert isinstance(table, Table)
    return table


def due_now() -> ColumnElement[datetime]:
    """The ``next_reconcile_at`` that makes an instance due at once: now, or when it
    was already due if that is earlier (making it due never postpones it)."""
    return func.least(table_of(Instance).c.next_reconcile_at, func.now())
