"""instance specs, plans, guarded upgrades and rollouts

``plans`` holds named plans (default spec, allowed ranges, CPU/memory quota) and
``tenants.plan`` names a tenant's. ``instances.labels`` are key/value labels
(rollout selectors match them). ``instance_upgrades`` records each guarded upgrade
(at most one open per instance: ``uq_instance_upgrades_open``), named while open by
``instances.upgrade_id``. ``rollouts`` and ``rollout_members`` are fleet upgrades and
rolling restarts in waves, their members chosen when the rollout is created.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-01 07:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_OPEN_UPGRADE = "phase IN ('pending', 'upgrading', 'probing', 'rolling_back')"


def _times(*names: str) -> list[sa.Column]:  # type: ignore[type-arg]
    return [
        sa.Column(name, sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False)
        for name in names
    ]


def _uuid(name: str, nullable: bool = False) -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(name, postgresql.UUID(as_uuid=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "plans",
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("definition", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        *_times("created_at", "updated_at"),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_plans")),
    )
    op.add_column("tenants", sa.Column("plan", sa.String(length=63), nullable=True))
    op.create_foreign_key(
        op.f("fk_tenants_plan_plans"), "tenants", "plans", ["plan"], ["name"], ondelete="RESTRICT"
    )
    op.add_column(
        "instances",
        sa.Column(
            "labels",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
    )
    op.create_table(
        "rollouts",
        _uuid("id"),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("request", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("current_wave", sa.Integer(), server_default="0", nullable=False),
        sa.Column(
            "next_step_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=True
        ),
        sa.Column("message", sa.Text(), nullable=True),
        *_times("created_at", "updated_at"),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rollouts")),
    )
    op.create_index(
        "ix_rollouts_active",
        "rollouts",
        ["next_step_at"],
        postgresql_where=sa.text("state IN ('pending', 'running')"),
    )
    op.create_table(
        "instance_upgrades",
        _uuid("id"),
        _uuid("instance_id"),
        _uuid("tenant_id"),
        _uuid("rollout_id", nullable=True),
        sa.Column("phase", sa.String(length=16), nullable=False),
        sa.Column("from_spec", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("to_spec", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        _uuid("snapshot_id", nullable=True),
        sa.Column("baseline", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("differences", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("failure_reason", sa.String(length=64), nullable=True),
        sa.Column("failure_message", sa.Text(), nullable=True),
        *_times("created_at"),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("switched_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        *_times("updated_at"),
        sa.ForeignKeyConstraint(
            ["instance_id"],
            ["instances.id"],
            name=op.f("fk_instance_upgrades_instance_id_instances"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_instance_upgrades_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["rollout_id"],
            ["rollouts.id"],
            name=op.f("fk_instance_upgrades_rollout_id_rollouts"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["snapshot_id"],
            ["snapshots.id"],
            name=op.f("fk_instance_upgrades_snapshot_id_snapshots"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_instance_upgrades")),
    )
    op.create_index(
        "uq_instance_upgrades_open",
        "instance_upgrades",
        ["instance_id"],
        unique=True,
        postgresql_where=sa.text(_OPEN_UPGRADE),
    )
    op.create_index(
        "ix_instance_upgrades_instance_created", "instance_upgrades", ["instance_id", "created_at"]
    )
    op.create_index("ix_instance_upgrades_rollout", "instance_upgrades", ["rollout_id"])
    op.add_column("instances", _uuid("upgrade_id", nullable=True))
    op.create_foreign_key(
        op.f("fk_instances_upgrade_id_instance_upgrades"),
        "instances",
        "instance_upgrades",
        ["upgrade_id"],
        ["id"],
        ondelete="SET NULL",
    )
    op.create_table(
        "rollout_members",
        _uuid("rollout_id"),
        _uuid("instance_id"),
        sa.Column("wave", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        _uuid("upgrade_id", nullable=True),
        sa.Column("target_generation", sa.Integer(), nullable=True),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["rollout_id"],
            ["rollouts.id"],
            name=op.f("fk_rollout_members_rollout_id_rollouts"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["instance_id"],
            ["instances.id"],
            name=op.f("fk_rollout_members_instance_id_instances"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["upgrade_id"],
            ["instance_upgrades.id"],
            name=op.f("fk_rollout_members_upgrade_id_instance_upgrades"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("rollout_id", "instance_id", name=op.f("pk_rollout_members")),
    )
    op.create_index("ix_rollout_members_wave", "rollout_members", ["rollout_id", "wave", "state"])
    op.create_index(op.f("ix_rollout_members_instance_id"), "rollout_members", ["instance_id"])


def downgrade() -> None:
    op.drop_table("rollout_members")
    op.drop_constraint(
        op.f("fk_instances_upgrade_id_instance_upgrades"), "instances", type_="foreignkey"
    )
    op.drop_column("instances", "upgrade_id")
    op.drop_table("instance_upgrades")
    op.drop_table("rollouts")
    op.drop_column("instances", "labels")
    op.drop_constraint(op.f("fk_tenants_plan_plans"), "tenants", type_="foreignkey")
    op.drop_column("tenants", "plan")
    op.drop_table("plans")
