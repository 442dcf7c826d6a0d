"""the generation whose request asked for an instance's pending load

``instances.restore_generation``: set with ``restore_snapshot_id`` (a restore, an
undelete, a clone, an import, an upgrade's rollback). The reconciler asks which
action asked for the load, and which ``pre_restore`` snapshot is that load's, of this
generation's requests, not of the instance's current one: a stop or a restart asked
while the load waited made a newer generation, and the failed ``pre_restore`` went
unseen (the data was then replaced with no copy of it). Rows already restoring get
their current generation, what the reconciler read before.

Revision ID: 0025
Revises: 0024
Create Date: 2026-12-03 22:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0025"
down_revision: str | None = "0024"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("instances", sa.Column("restore_generation", sa.Integer(), nullable=True))
    op.execute(
        "UPDATE instances SET restore_generation = generation WHERE restore_snapshot_id IS NOT NULL"
    )


def downgrade() -> None:
    op.drop_column("instances", "restore_generation")
