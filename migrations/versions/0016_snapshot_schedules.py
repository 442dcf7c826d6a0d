"""snapshot schedules: scheduled snapshots per tenant or per instance

``snapshot_schedules`` holds one schedule per tenant (``instance_id`` NULL) and at
most one per instance (it overrides its tenant's). ``instances.next_snapshot_at``
says when an instance's next scheduled snapshot is due: the scheduler finds the due
instances with one index range scan (``ix_instances_snapshot_due``), and the live
instances a schedule has yet to cover through ``ix_instances_unscheduled``.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-01 05:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "snapshot_schedules",
        sa.Column("id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("tenant_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("instance_id", postgresql.UUID(as_uuid=True), nullable=True),
        sa.Column("every_seconds", sa.Integer(), nullable=False),
        sa.Column("keep", sa.Integer(), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["instance_id"],
            ["instances.id"],
            name=op.f("fk_snapshot_schedules_instance_id_instances"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_snapshot_schedules_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_snapshot_schedules")),
    )
    op.create_index(
        "uq_snapshot_schedules_tenant",
        "snapshot_schedules",
        ["tenant_id"],
        unique=True,
        postgresql_where=sa.text("instance_id IS NULL"),
    )
    op.create_index(
        "uq_snapshot_schedules_instance",
        "snapshot_schedules",
        ["instance_id"],
        unique=True,
        postgresql_where=sa.text("instance_id IS NOT NULL"),
    )
    op.add_column(
        "instances", sa.Column("next_snapshot_at", sa.DateTime(timezone=True), nullable=True)
    )
    op.create_index(
        "ix_instances_snapshot_due",
        "instances",
        ["next_snapshot_at"],
        unique=False,
        postgresql_where=sa.text("next_snapshot_at IS NOT NULL"),
    )
    op.create_index(
        "ix_instances_unscheduled",
        "instances",
        ["tenant_id"],
        unique=False,
        postgresql_where=sa.text("next_snapshot_at IS NULL AND desired_state <> 'deleted'"),
    )


def downgrade() -> None:
    op.drop_index("ix_instances_unscheduled", table_name="instances")
    op.drop_index("ix_instances_snapshot_due", table_name="instances")
    op.drop_column("instances", "next_snapshot_at")
    op.drop_index("uq_snapshot_schedules_instance", table_name="snapshot_schedules")
    op.drop_index("uq_snapshot_schedules_tenant", table_name="snapshot_schedules")
    op.drop_table("snapshot_schedules")
