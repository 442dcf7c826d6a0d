"""intent lookup and purge: a repeat finds its instance's intent; deleted rows age out

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-27 09:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A repeated request answers with the intent of its instance's generation; the
    # cascade from a purged instance finds its intents by the same index.
    op.create_index(
        "ix_intents_instance_generation", "intents", ["instance_id", "target_generation"]
    )
    op.create_index(
        "ix_instances_deleted",
        "instances",
        ["phase_changed_at"],
        postgresql_where=sa.text("phase = 'deleted'"),
    )


def downgrade() -> None:
    op.drop_index("ix_instances_deleted", table_name="instances")
    op.drop_index("ix_intents_instance_generation", table_name="intents")
