"""A socket's lease on its token: verifications applied in the order they began,
a changed identity ends it, and a token's share of sockets is bounded."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.ext.asyncio import async_sessionmaker

from chroma_orch.domain.principal import ADMIN_SCOPE, TENANT_SCOPE, Principal
from chroma_orch.events.guard import SocketGuard, TokenLease, TooManySocketsError

SOON = datetime.now(UTC) + timedelta(hours=1)
PRINCIPAL = Principal(uuid.uuid4(), uuid.uuid4(), (TENANT_SCOPE,), expires_at=SOON)


async def test_a_verification_overtaken_by_a_newer_one_is_ignored() -> None:
    """The socket's own check read the token from the cache, a re-check read it
    afterwards from the database: the re-check's answer stands."""
    lease = TokenLease("co_x")
    later = replace(PRINCIPAL, expires_at=SOON + timedelta(hours=1))
    lease.confirm(later, ticket=2)
    lease.confirm(PRINCIPAL, ticket=1)
    assert lease.principal.expires_at == later.expires_at
    assert lease.reason is None


async def test_a_new_identity_ends_the_lease_and_a_past_expiry_too() -> None:
    lease = TokenLease("co_x")
    lease.confirm(PRINCIPAL, ticket=1)
    lease.confirm(replace(PRINCIPAL, scopes=(ADMIN_SCOPE,)), ticket=2)
    assert await lease.ended() == "token changed"
    expired = TokenLease("co_y")
    expired.confirm(replace(PRINCIPAL, expires_at=datetime.now(UTC)), ticket=1)
    assert await expired.ended() == "token expired"


def test_a_token_holds_at_most_its_share_of_sockets() -> None:
    guard = SocketGuard(async_sessionmaker(), limit=2)  # unbound: never queried here
    held = [guard.open("co_x"), guard.open("co_x")]
    with pytest.raises(TooManySocketsError):
        guard.open("co_x")
    guard.open("co_other")
    guard.release(held[0])
    guard.open("co_x")
