"""instance start phases

How far an instance's latest start got and when (``{"provisioning": "<time>", ...}``,
the phases of ``runtimes.base.StartPhase``): the reconciler records each phase as
it sees it, the API shows them, and each is an ``instance.start_phase`` event.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-01 01:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "instances",
        sa.Column("start_phases", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    )


def downgrade() -> None:
    op.drop_column("instances", "start_phases")
