"""token change notify: replicas drop a cached token the moment it changes

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26 09:20:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        """
        CREATE FUNCTION chroma_orch_token_changed() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('chroma_orch_tokens', OLD.token_hash);
            RETURN NULL;
        END
        $$
        """
    )
    op.execute(
        """
        CREATE TRIGGER api_tokens_changed
        AFTER UPDATE OF token_hash, tenant_id, scopes, expires_at, revoked_at OR DELETE
        ON api_tokens FOR EACH ROW EXECUTE FUNCTION chroma_orch_token_changed()
        """
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER api_tokens_changed ON api_tokens")
    op.execute("DROP FUNCTION chroma_orch_token_changed()")
