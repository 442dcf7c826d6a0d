"""token insert notify: a token created after it was refused works at once

Replicas remember refused tokens by digest for a short while; a new token's
digest (and a changed token's new digest) is notified like any change, so every
replica forgets that refusal.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-27 10:00:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_NOTIFY_NEW = """
CREATE OR REPLACE FUNCTION chroma_orch_token_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM pg_notify('chroma_orch_tokens', NEW.token_hash);
        RETURN NULL;
    END IF;
    PERFORM pg_notify('chroma_orch_tokens', OLD.token_hash);
    IF TG_OP = 'UPDATE' THEN
        IF NEW.token_hash <> OLD.token_hash THEN
            PERFORM pg_notify('chroma_orch_tokens', NEW.token_hash);
        END IF;
    END IF;
    RETURN NULL;
END
$$
"""
_NOTIFY_OLD = """
CREATE OR REPLACE FUNCTION chroma_orch_token_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('chroma_orch_tokens', OLD.token_hash);
    RETURN NULL;
END
$$
"""
_TRIGGER = """
CREATE TRIGGER api_tokens_changed
AFTER {events} ON api_tokens FOR EACH ROW EXECUTE FUNCTION chroma_orch_token_changed()
"""
_CHANGES = "UPDATE OF token_hash, tenant_id, scopes, expires_at, revoked_at OR DELETE"


def upgrade() -> None:
    op.execute(_NOTIFY_NEW)
    op.execute("DROP TRIGGER api_tokens_changed ON api_tokens")
    op.execute(_TRIGGER.format(events=f"INSERT OR {_CHANGES}"))


def downgrade() -> None:
    op.execute("DROP TRIGGER api_tokens_changed ON api_tokens")
    op.execute(_TRIGGER.format(events=_CHANGES))
    op.execute(_NOTIFY_OLD)
