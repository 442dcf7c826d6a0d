"""instance heartbeat failures: liveness after start

The heartbeat pass (``reconciler/heartbeat.py``) counts a running server's missed
heartbeats in a row on its instance, so every replica agrees on when the server
has become unresponsive, and when it last missed one (a second replica's pass
right after the first does not count the same silence twice).

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-01 01:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "instances",
        sa.Column("heartbeat_failures", sa.Integer(), nullable=False, server_default="0"),
    )
    op.add_column(
        "instances", sa.Column("heartbeat_failed_at", sa.DateTime(timezone=True), nullable=True)
    )


def downgrade() -> None:
    op.drop_column("instances", "heartbeat_failed_at")
    op.drop_column("instances", "heartbeat_failures")
