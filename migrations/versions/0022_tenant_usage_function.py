"""chroma_orch_tenant_usage(): a tenant's live instances and their CPU and memory,
counted after taking the tenant's spec lock

A launch is admitted by one statement (``domain/instances.py``, ``_ADMIT``) that
calls this function in its ``FROM``: the function takes the tenant's spec lock
(the advisory lock ``db.locks.NamedLock.TENANT_SPECS``, whose key text the caller
passes), then counts. A VOLATILE PL/pgSQL function's statements each take a new
snapshot under READ COMMITTED, so the count sees every launch or spec change of
the tenant committed before the lock was granted, which the calling statement's
own snapshot (taken before the wait) would not. Until now the lock took a
statement of its own, and the launch held it across three more round trips of
the client: one tenant's launches went one per four turns of a busy replica's
event loop. Now a launch that commits by itself holds it only inside PostgreSQL.

"Live" and the spec's fields are those of ``domain/specs.py`` (``check_quota``):
``desired_state <> 'deleted'``, ``spec->>'cpu'`` and ``spec->>'memory_mib'``.

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-03 13:10:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0022"
down_revision: str | None = "0021"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        """
        CREATE FUNCTION chroma_orch_tenant_usage(
            tenant uuid,
            lock_key text,
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
             WHERE i.tenant_id = tenant AND i.desired_state <> 'deleted';
        END
        $$
        """
    )


def downgrade() -> None:
    op.execute("DROP FUNCTION chroma_orch_tenant_usage(uuid, text)")
