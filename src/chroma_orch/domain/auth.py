"""Bearer tokens: generated once, stored as SHA-256, resolved to a ``Principal``.

Tokens carry 256 bits of randomness, so a fast hash is the right tool (as for
GitHub's tokens); the database is searched by hash, never by the secret.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from chroma_orch.db.models import ApiToken
from chroma_orch.domain.limits import AuthFailures
from chroma_orch.domain.token_cache import TokenCache
from chroma_orch.errors import ForbiddenError, NotFoundError, UnauthorizedError

TOKEN_PREFIX = "co_"
ADMIN_SCOPE = "admin"
TENANT_SCOPE = "tenant"
_LAST_USED_RESOLUTION = timedelta(minutes=1)


@dataclass(frozen=True)
class Principal:
    token_id: uuid.UUID
    tenant_id: uuid.UUID | None
    scopes: tuple[str, ...]
    expires_at: datetime | None = field(default=None, compare=False)
    """When the token expires (not part of its identity: a new expiry is the same caller)."""

    @property
    def is_admin(self) -> bool:
        return ADMIN_SCOPE in self.scopes

    def require_admin(self) -> None:
        if not self.is_admin:
            raise ForbiddenError("this operation needs an admin token")

    def can_see(self, tenant_id: uuid.UUID) -> bool:
        return self.is_admin or self.tenant_id == tenant_id

    def tenant_scope(self, requested: uuid.UUID | None) -> uuid.UUID:
        """The tenant an operation acts on: a tenant token's own, or the admin's choice."""
        if self.is_admin:
            if requested is None:
                raise ForbiddenError("an admin must name the tenant (tenant_id)")
            return requested
        assert self.tenant_id is not None
        if requested is not None and requested != self.tenant_id:
            raise NotFoundError("tenant not found")
        return self.tenant_id


SYSTEM = Principal(token_id=uuid.UUID(int=0), tenant_id=None, scopes=(ADMIN_SCOPE,))
"""The service itself, for actions it takes on its own (idle culling, waking)."""


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
