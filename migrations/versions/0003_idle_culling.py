"""idle culling: per-tenant and per-instance idle timeouts, wake-on-request

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26 07:10:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("tenants", sa.Column("idle_timeout_seconds", sa.Integer(), nullable=True))
    op.add_column("instances", sa.Column("idle_timeout_seconds", sa.Integer(), nullable=True))
    op.add_column(
        "instances",
        sa.Column("wake_on_request", sa.Boolean(), server_default=sa.false(), nullable=False),
    )
    op.add_column("instances", sa.Column("culled_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    op.drop_column("instances", "culled_at")
    op.drop_column("instances", "wake_on_request")
    op.drop_column("instances", "idle_timeout_seconds")
    op.drop_column("tenants", "idle_timeout_seconds")
