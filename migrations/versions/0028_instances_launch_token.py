"""the start token of the launch ``launch_by`` waits for

``instances.launch_token``: the start token (ECS's RunTask ``clientToken``) of the
start that recorded "starting" with ``launch_by``. A start on another token (a later
attempt, after a failed one) waits until that window closes and stops what the
runtime's listing then shows, before it launches: before, a replica that had lost its
lease while its RunTask was retried could launch a second task beside the new
attempt's, each on a volume of its own, and nothing stopped it while the instance ran.
Rows written before have none: a start on any token waits for their window.

Revision ID: 0028
Revises: 0027
Create Date: 2026-12-04 21:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0028"
down_revision: str | None = "0027"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("instances", sa.Column("launch_token", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("instances", "launch_token")
