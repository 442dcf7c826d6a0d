"""The token cache serves only while PostgreSQL's notifications can reach it."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from chroma_orch.domain.principal import TENANT_SCOPE, Principal
from chroma_orch.domain.token_cache import TokenCache

PRINCIPAL = Principal(token_id=uuid.uuid4(), tenant_id=uuid.uuid4(), scopes=(TENANT_SCOPE,))


def test_serves_a_verified_token_until_told_it_changed() -> None:
    cache = TokenCache(60, 10, connected=lambda: True)
    cache.put("a", PRINCIPAL, None, read_at=cache.epoch)
    cache.put("b", PRINCIPAL, None, read_at=cache.epoch)
    assert cache.get("a") == PRINCIPAL
    cache.on_notify("a")
    assert cache.get("a") is None
    assert cache.get("b") == PRINCIPAL
    cache.on_notify("")  # the listener (re)connected: anything may have been missed
    assert cache.get("b") is None


def test_serves_nothing_while_the_listener_is_disconnected() -> None:
    connected = [True]
    cache = TokenCache(60, 10, connected=lambda: connected[0])
    cache.put("a", PRINCIPAL, None, read_at=cache.epoch)
    connected[0] = False
    assert cache.get("a") is None
    cache.put("b", PRINCIPAL, None, read_at=cache.epoch)
    connected[0] = True
    assert cache.get("b") is None


def test_an_expired_token_is_not_served() -> None:
    cache = TokenCache(60, 10, connected=lambda: True)
    cache.put("a", PRINCIPAL, datetime.now(UTC) - timedelta(seconds=1), read_at=0)
    cache.put("b", PRINCIPAL, datetime.now(UTC) + timedelta(seconds=60), read_at=0)
    assert cache.get("a") is None
    assert cache.get("b") == PRINCIPAL


def test_a_read_overtaken_by_a_change_is_not_cached() -> None:
    """A token read, then revoked (the notification arrives) before the read's
    answer is stored: storing it would bring the revoked token back."""
    cache = TokenCache(60, 10, connected=lambda: True)
    read_at = cache.epoch
    cache.on_notify("a")  # the revoke's notification, between the read and the put
    cache.put("a", PRINCIPAL, None, read_at=read_at)
    assert cache.get("a") is None
    cache.put("a", PRINCIPAL, None, read_at=cache.epoch)
    assert cache.get("a") == PRINCIPAL


def test_a_refusal_is_remembered_until_the_token_changes() -> None:
    cache = TokenCache(60, 10, connected=lambda: True, refused_ttl=60)
    cache.refuse("a", "invalid token", read_at=cache.epoch)
    cache.refuse("b", "token expired", read_at=cache.epoch)
    assert cache.refused("a") == "invalid token"
    cache.on_notify("a")  # created (or changed) meanwhile
    assert cache.refused("a") is None
    assert cache.refused("b") == "token expired"
    cache.on_notify("")
    assert cache.refused("b") is None


def test_no_refusal_is_remembered_or_served_while_the_listener_is_down() -> None:
    connected = [True]
    cache = TokenCache(60, 10, connected=lambda: connected[0], refused_ttl=60)
    cache.refuse("a", "invalid token", read_at=cache.epoch)
    connected[0] = False
    assert cache.refused("a") is None
    cache.refuse("b", "invalid token", read_at=cache.epoch)
    connected[0] = True
    assert cache.refused("b") is None


def test_a_refusal_overtaken_by_a_creation_is_not_remembered() -> None:
    cache = TokenCache(60, 10, connected=lambda: True, refused_ttl=60)
    read_at = cache.epoch
    cache.on_notify("a")  # the token is created between the lookup and the refusal
    cache.refuse("a", "invalid token", read_at=read_at)
    assert cache.refused("a") is None
