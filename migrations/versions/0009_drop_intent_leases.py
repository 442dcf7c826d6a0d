"""intents: drop lease_owner, lease_expires_at and next_attempt_at

The reconciler leases instances, not intents: these three columns were written
(an intent's lease set when its instance was claimed, cleared when settled;
next_attempt_at left at its default) and never read. Nothing replaces them.

A replica of an earlier release still running when this migration lands writes
intents' lease columns when it claims an instance, and fails until it is
replaced: roll all replicas onto this release together.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30 21:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_column("intents", "next_attempt_at")
    op.drop_column("intents", "lease_expires_at")
    op.drop_column("intents", "lease_owner")


def downgrade() -> None:
    op.add_column("intents", sa.Column("lease_owner", sa.String(length=128), nullable=True))
    op.add_column(
        "intents", sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True)
    )
    op.add_column(
        "intents",
        sa.Column(
            "next_attempt_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
    )
