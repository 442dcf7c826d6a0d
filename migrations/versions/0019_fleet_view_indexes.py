"""fleet view: partial indexes on the event log for GET /v1/fleet

The fleet view reads the latest starts that reached ``running`` and the latest
failures, newest first, from an event log of any length; and, for each start, the
events of its instance that began it. Three partial indexes keep those reads to
the rows they return (EXPLAIN at 10,000 instances and ~50,000 events in
``tests/api/test_fleet_api.py``), and cost an insert only for the events they hold.

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-02 01:40:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

RUNNING = "type = 'instance.phase_changed' AND (after ->> 'phase') = 'running'"
FAILURES = "type IN ('instance.failed', 'instance.crashed')"
LIFECYCLE = "type IN ('instance.created', 'instance.desired_changed', 'instance.phase_changed')"


def upgrade() -> None:
    for name, where in (("ix_events_running", RUNNING), ("ix_events_failures", FAILURES)):
        op.create_index(name, "events", ["created_at"], postgresql_where=sa.text(where))
    op.create_index(
        "ix_events_lifecycle", "events", ["instance_id", "seq"], postgresql_where=sa.text(LIFECYCLE)
    )


def downgrade() -> None:
    op.drop_index("ix_events_lifecycle", table_name="events")
    op.drop_index("ix_events_failures", table_name="events")
    op.drop_index("ix_events_running", table_name="events")
