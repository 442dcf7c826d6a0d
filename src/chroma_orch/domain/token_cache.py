"""Resolved tokens, kept per replica so a request needs no lookup to know its caller.

A cached token stays valid only as long as PostgreSQL is known to tell us about
changes: a trigger on ``api_tokens`` notifies ``TOKENS_CHANNEL`` with the token's
digest whenever it is created, revoked, re-scoped, given another expiry or
deleted (also by cascade, and also from another process such as ``chroma-orch
admin-token``), and every replica drops that entry. While the listener is not connected nothing
is served from the cache (a notification could be missed then), nor while it has not
proved within ``HEARD_WITHIN`` seconds that it hears PostgreSQL (its pings: a
connection that died without a close is trusted no longer than that), and on each
(re)connection the cache starts empty. Expiry is checked on every hit; ``ttl``
only bounds how stale ``last_used_at`` and a forgotten entry can get.

Refused tokens are kept too, by digest, for ``refused_ttl``, under the same rules:
a token refused once and created since works at once (its creation is notified),
and nothing is refused from memory while the listener is down.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from chroma_orch.cache import TtlCache
from chroma_orch.domain.principal import Principal

TOKENS_CHANNEL = "chroma_orch_tokens"

HEARD_WITHIN = 3.0
"""Seconds the cache trusts the listener after its newest answered ping (sent every
second, ``db/listener.py``): a revoke's notification lost on a connection that died
silently leaves a cached token usable at most this long after the revoke."""


@dataclass(frozen=True)
class _Entry:
    principal: Principal
    expires_at: datetime | None


class TokenCache:
    def __init__(
        self, ttl: float, size: int, connected: Callable[[], bool], refused_ttl: float = 0.0
    ) -> None:
        self._entries: TtlCache[str, _Entry] = TtlCache(ttl, size)
        self._refused: TtlCache[str, str] = TtlCache(refused_ttl, size)
        self._connected = connected
        self._epoch = 0

    @property
    def epoch(self) -> int:
        """Moves on with every change heard of. Take it before reading a token, and
        ``put`` stores what was read only if no change arrived meanwhile (a revoke
        committed between the read and the ``put`` must not be cached over)."""
        return self._epoch

    def get(self, digest: str) -> Principal | None:
        """The principal of a token (by digest) verified before and unchanged since."""
        if not self._connected():
            return None
        entry = self._entries.get(digest)
        if entry is None:
            return None
        if entry.expires_at is not None and entry.expires_at <= datetime.now(UTC):
            self._entries.drop(digest)
            return None
        return entry.principal

    def put(
        self, digest: str, principal: Principal, expires_at: datetime | None, *, read_at: int
    ) -> None:
        if self._connected() and read_at == self._epoch:
            self._entries.put(digest, _Entry(principal, expires_at))

    def refused(self, digest: str) -> str | None:
        """Why the token (by digest) was refused lately, if it was and has not
        changed since."""
        return self._refused.get(digest) if self._connected() else None

    def refuse(self, digest: str, reason: str, *, read_at: int) -> None:
        """Remember a refusal (see ``put`` for ``read_at``)."""
        if self._connected() and read_at == self._epoch:
            self._refused.put(digest, reason)

    def forget(self, digest: str) -> None:
        self._epoch += 1
        self._entries.drop(digest)
        self._refused.drop(digest)

    def on_notify(self, payload: str) -> None:
        """A token changed (payload: its digest), or the listener (re)connected ("")."""
        if payload:
            self.forget(payload)
        else:
            self._epoch += 1
            self._entries.clear()
            self._refused.clear()
