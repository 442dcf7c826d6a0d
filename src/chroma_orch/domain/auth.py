"""Bearer tokens: generated once, stored as SHA-256, resolved to a ``Principal``.

Tokens carry 256 bits of randomness, so a fast hash is the right tool (as for
GitHub's tokens); the database is searched by hash, never by the secret.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from chroma_orch.db.models import ApiToken
from chroma_orch.domain.limits import AuthFailures
from chroma_orch.domain.principal import Principal
from chroma_orch.domain.token_cache import TokenCache
from chroma_orch.errors import UnauthorizedError

TOKEN_PREFIX = "co_"
_LAST_USED_RESOLUTION = timedelta(minutes=1)


def generate_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def display_prefix(token: str) -> str:
    return token[: len(TOKEN_PREFIX) + 6]


async def issue_token(
    session: AsyncSession,
    *,
    name: str,
    tenant_id: uuid.UUID | None,
    scopes: list[str],
    expires_at: datetime | None = None,
    token: str | None = None,
) -> tuple[ApiToken, str]:
    """Create a token row; returns it with the secret, which is never stored."""
    secret = token or generate_token()
    row = ApiToken(
        name=name,
        tenant_id=tenant_id,
        scopes=scopes,
        token_hash=hash_token(secret),
        prefix=display_prefix(secret),
        expires_at=expires_at,
    )
    session.add(row)
    await session.flush()
    return row, secret


async def authenticate(
    session: AsyncSession,
    token: str | None,
    cache: TokenCache | None = None,
    *,
    failures: AuthFailures | None = None,
    client: str | None = None,
) -> Principal:
    """Resolve a bearer token, or raise ``UnauthorizedError``. Revoked and expired fail.
    With a ``cache``, a token verified before and unchanged since needs no lookup, nor
    does one refused lately. With ``failures`` and the ``client``'s address, refusals
    are counted per address, and an address past its limit gets
    ``TooManyAuthFailuresError`` for any token the cache does not know as valid."""
    if not token:
        raise UnauthorizedError("missing bearer token")
    digest = hash_token(token)
    cached = cache.get(digest) if cache is not None else None
    if cached is not None:
        return cached
    if failures is not None and client is not None:
        failures.check(client)
    try:
        return await _verify(session, token, digest, cache)
    except UnauthorizedError:
        if failures is not None and client is not None:
            failures.record(client)
        raise


async def _verify(
    session: AsyncSession, token: str, digest: str, cache: TokenCache | None
) -> Principal:
    """The token's principal, read from the database (and cached); refusals too."""
    if len(token) > 256:
        raise UnauthorizedError("invalid token")
    refused = cache.refused(digest) if cache is not None else None
    if refused is not None:
        raise UnauthorizedError(refused)
    epoch = cache.epoch if cache is not None else 0
    row = await session.scalar(select(ApiToken).where(ApiToken.token_hash == digest))
    now = datetime.now(UTC)
    refusal = _refusal(row, now)
    if refusal is not None:
        if cache is not None:
            cache.refuse(digest, refusal, read_at=epoch)
        raise UnauthorizedError(refusal)
    assert row is not None
    if row.last_used_at is None or now - row.last_used_at > _LAST_USED_RESOLUTION:
        await session.execute(
            update(ApiToken).where(ApiToken.id == row.id).values(last_used_at=now)
        )
    principal = Principal(
        token_id=row.id,
        tenant_id=row.tenant_id,
        scopes=tuple(row.scopes),
        expires_at=row.expires_at,
    )
    if cache is not None:
        cache.put(digest, principal, row.expires_at, read_at=epoch)
    return principal


def _refusal(row: ApiToken | None, now: datetime) -> str | None:
    """Why a token's row does not authenticate anyone (None: it does)."""
    if row is None or row.revoked_at is not None:
        return "invalid token"
    if row.expires_at is not None and row.expires_at <= now:
        return "token expired"
    return None


def bearer_from_header(value: str | None) -> str | None:
    if not value:
        return None
    scheme, _, credentials = value.partition(" ")
    if scheme.lower() != "bearer" or not credentials.strip():
        return None
    return credentials.strip()
