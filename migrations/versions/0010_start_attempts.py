"""instance start attempts and capacity waits

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-30 22:50:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "instances",
        sa.Column("start_attempts", sa.Integer(), nullable=False, server_default="0"),
    )
    op.add_column(
        "instances",
        sa.Column("capacity_waits", sa.Integer(), nullable=False, server_default="0"),
    )


def downgrade() -> None:
    op.drop_column("instances", "capacity_waits")
    op.drop_column("instances", "start_attempts")
