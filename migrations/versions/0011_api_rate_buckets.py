"""api rate buckets: cloud API budgets shared by every replica

AWS throttles its APIs per account and region with token buckets. Each replica
kept its own client-side buckets, so N replicas allowed N times the account's
rate. One row per bucket (``name``: e.g. ``ecs:us-east-1:run``) holds its tokens
and when they were last counted; one statement (``db/rate_buckets.py``) refills
by the time elapsed and takes what a call needs, for every replica alike.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-30 22:50:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE api_rate_buckets (
            name varchar(128) NOT NULL,
            tokens double precision NOT NULL,
            updated_at timestamptz NOT NULL DEFAULT clock_timestamp(),
            CONSTRAINT pk_api_rate_buckets PRIMARY KEY (name)
        )
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE api_rate_buckets")
