"""released endpoints: an address one instance left is not given to another at once

Every time an instance's endpoint (host, port) is cleared or changed, or its row is
deleted, a trigger records that address as released by that instance. The local
port allocator gives no port another instance left within the quarantine
(``CHROMA_ORCH_PROXY__ADDRESS_QUARANTINE``), so no authorisation cached for the
instance that left (the built-in proxy's route cache, Nginx's auth cache) can reach
a new instance's server there. Rows older than an hour are dropped whenever that
address is released again (and by the retention pass).

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30 19:30:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE released_endpoints (
            host varchar(255) NOT NULL,
            port integer NOT NULL,
            instance_id uuid NOT NULL,
            released_at timestamptz NOT NULL DEFAULT clock_timestamp(),
            CONSTRAINT pk_released_endpoints PRIMARY KEY (host, port, instance_id)
        )
        """
    )
    op.execute(
        """
        CREATE FUNCTION chroma_orch_endpoint_released() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            DELETE FROM released_endpoints
            WHERE host = OLD.endpoint_host AND port = OLD.endpoint_port
                AND released_at < clock_timestamp() - interval '1 hour';
            INSERT INTO released_endpoints (host, port, instance_id, released_at)
            VALUES (OLD.endpoint_host, OLD.endpoint_port, OLD.id, clock_timestamp())
            ON CONFLICT (host, port, instance_id)
            DO UPDATE SET released_at = EXCLUDED.released_at;
            RETURN NULL;
        END
        $$
        """
    )
    op.execute(
        """
        CREATE TRIGGER instances_endpoint_released
        AFTER UPDATE OF endpoint_host, endpoint_port ON instances FOR EACH ROW
        WHEN (OLD.endpoint_host IS NOT NULL AND OLD.endpoint_port IS NOT NULL
            AND (OLD.endpoint_host, OLD.endpoint_port)
                IS DISTINCT FROM (NEW.endpoint_host, NEW.endpoint_port))
        EXECUTE FUNCTION chroma_orch_endpoint_released()
        """
    )
    op.execute(
        """
        CREATE TRIGGER instances_endpoint_deleted
        AFTER DELETE ON instances FOR EACH ROW
        WHEN (OLD.endpoint_host IS NOT NULL AND OLD.endpoint_port IS NOT NULL)
        EXECUTE FUNCTION chroma_orch_endpoint_released()
        """
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER instances_endpoint_deleted ON instances")
    op.execute("DROP TRIGGER instances_endpoint_released ON instances")
    op.execute("DROP FUNCTION chroma_orch_endpoint_released()")
    op.execute("DROP TABLE released_endpoints")
