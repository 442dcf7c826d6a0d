"""task states: the latest known state of each cloud task, shared by every replica

Event-driven observation of ECS tasks (docs/ecs.md "Event-driven observation"):
whichever replica receives an "ECS Task State Change" event from the SQS queue
records the task's state here, and every replica's ``poll`` answers from it. A
state is replaced only by one of a higher or equal ``version`` (ECS's per-task
counter), so duplicate and out-of-order events never take a task back.
``checked_at`` says when the state was last written: one older than the safety
sweep's interval is described again.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-01 01:00:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE task_states (
            key varchar(255) NOT NULL,
            version bigint NOT NULL,
            doc jsonb NOT NULL,
            checked_at timestamptz NOT NULL DEFAULT clock_timestamp(),
            CONSTRAINT pk_task_states PRIMARY KEY (key)
        )
        """
    )
    op.execute("CREATE INDEX ix_task_states_checked_at ON task_states (checked_at)")


def downgrade() -> None:
    op.execute("DROP TABLE task_states")
