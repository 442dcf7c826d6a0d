"""until when a start may still launch a server it has not recorded

``instances.launch_by``: written with "starting" (the runtime's ``launch_budget``
after it; the runtime launches nothing later), never moved earlier: a failed attempt
of one replica does not end another's that lost its lease while it waited to send;
once a start records its server or fails, back to an earlier attempt's if that is still
ahead; cleared by a stop (which lists what a start left, once the window closes). A stop
or delete of an instance with no server recorded waits for it, and the
runtime's ``visibility_grace``, before it trusts the runtime's listing. Before, it
waited ``visibility_grace`` from "starting" only: a replica that had lost its lease
while RunTask was retried under throttling could launch after that listing. Rows
starting with no server get "starting" + 60 s (the ECS and simulated runtimes'
default budget; the local runtime's is 10 s).

Revision ID: 0027
Revises: 0026
Create Date: 2026-12-04 18:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0027"
down_revision: str | None = "0026"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("instances", sa.Column("launch_by", sa.DateTime(timezone=True), nullable=True))
    op.execute(
        "UPDATE instances SET launch_by = phase_changed_at + interval '60 seconds' "
        "WHERE phase = 'starting' AND (handle IS NULL OR handle = 'null'::jsonb)"
    )


def downgrade() -> None:
    op.drop_column("instances", "launch_by")
