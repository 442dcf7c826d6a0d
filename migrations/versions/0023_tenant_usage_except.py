"""chroma_orch_tenant_usage(): optionally without one instance, so that a spec
change counts the tenant's usage with the same function a launch does

A spec change checks the quota over the tenant's live instances but the one it
changes (whose new spec is what it asks room for). Until now that sum was a
second definition of "live usage", in Python (``domain/specs.py``); with
``except_instance`` both paths call this function, which also takes the
tenant's spec lock (re-entrant: a change that took it already takes it again,
released with its transaction). Called with two arguments it is 0022's function.

Revision ID: 0023
Revises: 0022
Create Date: 2026-12-03 15:20:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0023"
down_revision: str | None = "0022"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _create(extra_parameter: str, extra_condition: str) -> str:
    return f"""
        CREATE FUNCTION chroma_orch_tenant_usage(
            tenant uuid,
            lock_key text,{extra_parameter}
            OUT live_instances bigint,
            OUT cpu_used bigint,
            OUT memory_used bigint
        )
        LANGUAGE plpgsql VOLATILE AS $$
        BEGIN
            PERFORM pg_advisory_xact_lock(hashtextextended(lock_key, 0));
            SELECT count(*),
                   coalesce(sum((i.spec ->> 'cpu')::integer), 0),
                   coalesce(sum((i.spec ->> 'memory_mib')::integer), 0)
              INTO live_instances, cpu_used, memory_used
              FROM instances AS i
             WHERE i.tenant_id = tenant AND i.desired_state <> 'deleted'{extra_condition};
        END
        $$
        """


def upgrade() -> None:
    op.execute("DROP FUNCTION chroma_orch_tenant_usage(uuid, text)")
    op.execute(
        _create(
            "\n            except_instance uuid DEFAULT NULL,",
            "\n               AND i.id IS DISTINCT FROM except_instance",
        )
    )


def downgrade() -> None:
    op.execute("DROP FUNCTION chroma_orch_tenant_usage(uuid, text, uuid)")
    op.execute(_create("", ""))
