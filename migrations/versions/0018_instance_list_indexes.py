"""indexes of the instance list's pages (the dashboard at 10,000 instances)

``GET /v1/instances`` pages in ``(created_at, id)`` order, for everyone, for one
tenant or for one phase, and searches by a prefix of the instance's or its tenant's
name (``db/instance_list.py``). Without these a page read every row of
``instances`` and sorted it.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-02 02:00:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_instances_created", "instances", ["created_at", "id"])
    op.create_index("ix_instances_tenant_created", "instances", ["tenant_id", "created_at", "id"])
    op.create_index("ix_instances_phase_created", "instances", ["phase", "created_at", "id"])
    op.create_index(
        "ix_instances_name_prefix",
        "instances",
        ["name"],
        postgresql_ops={"name": "varchar_pattern_ops"},
    )
    op.create_index(
        "ix_tenants_name_prefix",
        "tenants",
        ["name"],
        postgresql_ops={"name": "varchar_pattern_ops"},
    )


def downgrade() -> None:
    op.drop_index("ix_tenants_name_prefix", table_name="tenants")
    op.drop_index("ix_instances_name_prefix", table_name="instances")
    op.drop_index("ix_instances_phase_created", table_name="instances")
    op.drop_index("ix_instances_tenant_created", table_name="instances")
    op.drop_index("ix_instances_created", table_name="instances")
