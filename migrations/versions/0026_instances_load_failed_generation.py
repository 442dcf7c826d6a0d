"""the generation at which an instance's asked-for load failed

``instances.load_failed_generation``: written with the failure of a load (a
restore, an undelete, a clone, an import: ``MARK_RESTORE_FAILED``). A delete asked
while it is still the instance's generation, of an undelete, takes no ``pre_delete``
snapshot: the instance has no data, and a snapshot of its empty data directory would
be the newest ready ``pre_delete``, the one the next undelete loads, in place of the
snapshot that holds the data. Existing rows get none (the snapshot is taken, as
before): a failed load could not be told from a failed start after a load.

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
    op.add_column("instances", sa.Column("load_failed_generation", sa.Integer(), nullable=True))


def downgrade() -> None:
    op.drop_column("instances", "load_failed_generation")
