"""snapshots: an instance's data as versioned archives

Each snapshot is a row the API writes (``pending``) and the reconciler carries out
under its instance's lease (``running`` → ``ready`` | ``failed``; ``deleting`` while a
DELETE removes the archive). ``instances.restore_snapshot_id`` names the data an
instance loads before its next start (a restore, a clone, an import); the
reconciler clears it once the data is in place.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-01 04:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_OPEN = "phase IN ('pending', 'running', 'deleting')"


def upgrade() -> None:
    op.create_table(
        "snapshots",
        sa.Column("id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("instance_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("tenant_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("phase", sa.String(length=16), nullable=False),
        sa.Column("failure_reason", sa.String(length=64), nullable=True),
        sa.Column("failure_message", sa.Text(), nullable=True),
        sa.Column("size_bytes", sa.BigInteger(), nullable=True),
        sa.Column("checksum", sa.String(length=64), nullable=True),
        sa.Column("chroma_version", sa.String(length=32), nullable=True),
        sa.Column("store", sa.String(length=16), nullable=False),
        sa.Column("location", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["instance_id"],
            ["instances.id"],
            name=op.f("fk_snapshots_instance_id_instances"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_snapshots_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_snapshots")),
    )
    op.create_index(
        "ix_snapshots_instance_created", "snapshots", ["instance_id", "created_at"], unique=False
    )
    op.create_index(
        "ix_snapshots_open",
        "snapshots",
        ["instance_id", "created_at"],
        unique=False,
        postgresql_where=sa.text(_OPEN),
    )
    op.create_index("ix_snapshots_tenant_id", "snapshots", ["tenant_id"], unique=False)
    op.add_column(
        "instances",
        sa.Column("restore_snapshot_id", postgresql.UUID(as_uuid=True), nullable=True),
    )
    op.create_foreign_key(
        op.f("fk_instances_restore_snapshot_id_snapshots"),
        "instances",
        "snapshots",
        ["restore_snapshot_id"],
        ["id"],
    )


def downgrade() -> None:
    op.drop_constraint(
        op.f("fk_instances_restore_snapshot_id_snapshots"), "instances", type_="foreignkey"
    )
    op.drop_column("instances", "restore_snapshot_id")
    op.drop_index("ix_snapshots_tenant_id", table_name="snapshots")
    op.drop_index("ix_snapshots_open", table_name="snapshots")
    op.drop_index("ix_snapshots_instance_created", table_name="snapshots")
    op.drop_table("snapshots")
