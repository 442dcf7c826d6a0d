"""The token cache serves only while PostgreSQL's notifications can reach it."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from chroma_orch.domain.auth import TENANT_SCOPE, Principal
from chroma_orch.domain.token_cache import TokenCache

PRINCIPAL = Principal(token_id=uuid.uuid4(), tenant_id=uuid.uuid4(), scopes=(TENANT_SCOPE,))


def test_serves_a_verified_token_until_told_it_changed() -> None:
    cache = TokenCache(60, 10, connected=lambda: True)
    cache.put("a", PRINCIPAL, None)
    cache.put("b", PRINCIPAL, None)
    assert cache.get("a") == PRINCIPAL
    cache.on_notify("a")
    assert cache.get("a") is None
    assert cache.get("b") == PRINCIPAL
    cache.on_notify("")  # the listener (re)connected: anything may have been missed
    assert cache.get("b") is None


def test_serves_nothing_while_the_listener_is_disconnected() -> None:
    connected = [True]
    cache = TokenCache(60, 10, connected=lambda: connected[0])
    cache.put("a", PRINCIPAL, None)
    connected[0] = False
    assert cache.get("a") is None
    cache.put("b", PRINCIPAL, None)
    connected[0] = True
    assert cache.get("b") is None


def test_an_expired_token_is_not_served() -> None:
    cache = TokenCache(60, 10, connected=lambda: True)
    cache.put("a", PRINCIPAL, datetime.now(UTC) - timedelta(seconds=1))
    cache.put("b", PRINCIPAL, datetime.now(UTC) + timedelta(seconds=60))
    assert cache.get("a") is None
    assert cache.get("b") == PRINCIPAL
