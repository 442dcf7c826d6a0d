"""whether a delete kept the data in place only for an undelete

``instances.data_kept_for_undelete``: written by a delete's last step, true where
the data stays in place although ``keep_data`` was not asked for, because the
``pre_delete`` snapshot that was to hold it failed. Past the retention of deleted
instances (the end of the undelete's window) it is removed, as a purge removes it;
before, the retention pass deleted the row and left the data on the runtime's
storage with nothing pointing at it. Data kept on request (``keep_data=true``) stays,
as documented. Rows deleted before carry false: whatever they kept stays.

Revision ID: 0029
Revises: 0028
Create Date: 2026-12-05 07:40:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0029"
down_revision: str | None = "0028"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "instances",
        sa.Column(
            "data_kept_for_undelete", sa.Boolean(), nullable=False, server_default=sa.false()
        ),
    )


def downgrade() -> None:
    op.drop_column("instances", "data_kept_for_undelete")
