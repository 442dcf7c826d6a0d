"""Sockets follow their token: each open socket holds a ``TokenLease`` on it.

A REST request checks its token on every call; a socket checks it once, when it
opens, so the replica keeps its open sockets by token and:

- when PostgreSQL says the token changed (the trigger on ``api_tokens`` that
  also drops it from the token cache), re-verifies it and ends the sockets of a
  token that is revoked, deleted, expired or re-scoped; a new expiry moves the
  sockets' timers;
- after the listener (re)connected, when a notification may have been missed,
  re-verifies every token that holds a socket;
- ends each socket when its token's ``expires_at`` passes (a timer per socket);
- refuses a token's socket beyond ``max_sockets_per_token`` on this replica.

A socket whose lease ends is closed with 4401 by its handler.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chroma_orch.db.listener import PgListener
from chroma_orch.domain.auth import authenticate, hash_token
from chroma_orch.domain.principal import Principal
from chroma_orch.domain.token_cache import TOKENS_CHANNEL
from chroma_orch.errors import UnauthorizedError
from chroma_orch.loops import Loops

log = logging.getLogger(__name__)

_RETRY_MAX = 5.0


class TooManySocketsError(Exception):
    """The token already holds its share of this replica's sockets."""


class TokenEndedError(Exception):
    """The socket's token was revoked, deleted, re-scoped or expired."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class TokenLease:
    """One socket's hold on its token: who it is, until when, and whether it ended."""

    def __init__(self, token: str) -> None:
        self.token = token
        """The secret, kept (as the socket's own headers keep it) to re-verify it."""
        self.digest = hash_token(token)
        self._principal: Principal | None = None
        self._checked = -1
        self._reason: str | None = None
        self._changed = asyncio.Event()

    @property
    def principal(self) -> Principal:
        assert self._principal is not None, "the lease was never confirmed"
        return self._principal

    @property
    def reason(self) -> str | None:
        """Why the lease ended; None while it holds."""
        return self._reason

    def confirm(self, principal: Principal, ticket: int) -> None:
        """Apply a verification that began at ``ticket`` (an older one than the last
        applied is ignored): the token is valid, with this identity and expiry."""
        if ticket < self._checked:
            return
        self._checked = ticket
        if self._principal is not None and principal != self._principal:
            self.end("token changed")
            return
        self._principal = principal
        self._changed.set()

    def end(self, reason: str) -> None:
        if self._reason is None:
            self._reason = reason
        self._changed.set()

    async def ended(self) -> str:
        """Wait until the lease ends (revoked, changed, expired); the reason."""
        while self._reason is None:
            expires_at = self._principal.expires_at if self._principal else None
            timeout = None
            if expires_at is not None:
                timeout = (expires_at - datetime.now(UTC)).total_seconds()
                if timeout <= 0:
                    self.end("token expired")
                    break
            self._changed.clear()
            try:  # not wait_for: on 3.11 it can swallow a cancellation (loops.py)
                async with asyncio.timeout(timeout):
                    await self._changed.wait()
            except TimeoutError:
                pass
        assert self._reason is not None
        return self._reason


class SocketGuard:
    """This replica's open sockets by token: caps them, and ends them when their
    token stops being valid."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], limit: int) -> None:
        self.sessions = sessions
        self.limit = limit
        self._leases: defaultdict[str, set[TokenLease]] = defaultdict(set)
        self._tickets = itertools.count()
        self._due: set[str] = set()
        self._wake = asyncio.Event()

    def open(self, token: str) -> TokenLease:
        """A lease for a socket about to authenticate with ``token``; registered
        before the token is read, so no change to it can fall in between."""
        lease = TokenLease(token)
        held = self._leases[lease.digest]
        if len(held) >= self.limit:
            if not held:
                del self._leases[lease.digest]
            raise TooManySocketsError(f"too many open sockets for this token (limit {self.limit})")
        held.add(lease)
        return lease

    def release(self, lease: TokenLease) -> None:
        held = self._leases.get(lease.digest)
        if held is not None:
            held.discard(lease)
            if not held:
                del self._leases[lease.digest]

    def ticket(self) -> int:
        """Take before reading a token; hand to ``TokenLease.confirm`` with the result."""
        return next(self._tickets)

    def on_notify(self, payload: str) -> None:
        """Listener callback: a token changed (its digest), or "" after a reconnect."""
        due = [payload] if payload else list(self._leases)
        self._due.update(digest for digest in due if digest in self._leases)
        if self._due:
            self._wake.set()

    async def run(self) -> None:
        delay = 0.1
        while True:
            await self._wake.wait()
            self._wake.clear()
            due, self._due = self._due, set()
            try:
                await self.recheck(due)
                delay = 0.1
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("re-checking socket tokens failed retry_in=%.1fs", delay)
                self._due |= due
                await asyncio.sleep(delay)
                delay = min(delay * 2, _RETRY_MAX)
                self._wake.set()

    async def recheck(self, digests: Iterable[str]) -> None:
        """Verify each token again, from the database, and apply it to its leases."""
        async with self.sessions() as session:
            for digest in digests:
                leases = list(self._leases.get(digest, ()))
                if not leases:
                    continue
                ticket = self.ticket()
                try:
                    principal = await authenticate(session, leases[0].token)
                except UnauthorizedError as exc:
                    log.info("closing sockets of an invalid token sockets=%s", len(leases))
                    for lease in leases:
                        lease.end(exc.detail or "invalid token")
                    continue
                for lease in leases:
                    lease.confirm(principal, ticket)
            await session.commit()


def start(
    sessions: async_sessionmaker[AsyncSession],
    limit: int,
    loops: Loops,
    listener: PgListener,
) -> SocketGuard:
    """The replica's guard, its loop registered in ``loops``, fed by the token
    notifications of ``listener``."""
    guard = SocketGuard(sessions, limit)
    listener.subscribe(TOKENS_CHANNEL, guard.on_notify)
    loops.add("socket-guard", guard.run)
    return guard
