"""whether an undelete's load failed and no server has run since

``instances.undelete_unloaded``: set when an undelete's load fails
(``MARK_RESTORE_FAILED``; a failed restore after it keeps it), cleared when a server
runs (``MARK_RUNNING``: routed, its clients may write) or a later load succeeds
(``RECORD_DATA_LOADED``). While set, the instance has no data:
the ``pre_delete`` snapshot it was undeleted from holds it. A delete then takes no
``pre_delete`` snapshot: one of the empty data directory would be the newest ready
``pre_delete``, the one the next undelete loads, in place of the one that holds the
data. Requests that run no server (a stop, a start that fails) leave it set. Existing rows
get false (the snapshot is taken, as before: a failed load could not be told from a
failed start after a load).

Revision ID: 0026
Revises: 0025
Create Date: 2026-12-04 17:45:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0026"
down_revision: str | None = "0025"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "instances",
        sa.Column("undelete_unloaded", sa.Boolean(), nullable=False, server_default=sa.false()),
    )


def downgrade() -> None:
    op.drop_column("instances", "undelete_unloaded")
