"""a partial index of instances restoring a snapshot

Every read of "which instance is restoring this snapshot" (a snapshot's DELETE, a
purge, retention, the pruning of scheduled snapshots, the reconciler's choice of
what to delete) and the foreign-key check PostgreSQL makes when a snapshot row is
deleted look for ``instances.restore_snapshot_id = <snapshot>``: without an index,
a sequential scan of ``instances`` each (10,000 rows at the fleet's scale). Almost
no instance is restoring, so the index holds only those that are.

Revision ID: 0024
Revises: 0023
Create Date: 2026-12-03 19:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0024"
down_revision: str | None = "0023"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_instances_restoring",
        "instances",
        ["restore_snapshot_id"],
        postgresql_where=sa.text("restore_snapshot_id IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_instances_restoring", table_name="instances")
