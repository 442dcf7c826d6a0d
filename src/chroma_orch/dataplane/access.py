"""Who may reach which instance, and where it listens: tokens and routes, briefly cached.

Both lookups hit PostgreSQL on a miss only. Verified tokens come from the
replica's ``TokenCache`` (dropped as soon as a token changes); routes are reused
for ``route_cache_ttl`` seconds, and every cached route is dropped as soon
as any instance event reaches this replica (the event hub's sequence moves) or
a connection to the cached endpoint fails, so a restarted or moved instance is
found at its new endpoint without waiting for the TTL.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chroma_orch.cache import TtlCache
from chroma_orch.db.hub import EventHub
from chroma_orch.db.models import Instance
from chroma_orch.domain.auth import authenticate, bearer_from_header
from chroma_orch.domain.limits import AuthFailures
from chroma_orch.domain.principal import TENANT_SCOPE, Principal
from chroma_orch.domain.states import DesiredState, Phase
from chroma_orch.domain.token_cache import TokenCache
from chroma_orch.errors import (
    ForbiddenError,
    NotFoundError,
    ServiceUnavailableError,
    UnauthorizedError,
)
from chroma_orch.settings import ProxySettings

TOKEN_HEADER = "x-chroma-token"


class InstanceNotRunningError(ServiceUnavailableError):
    code, title = "instance_not_running", "The instance is not running"

    def __init__(self, detail: str, retry_after: int) -> None:
        super().__init__(detail, headers={"Retry-After": str(retry_after)})


@dataclass(frozen=True)
class Route:
    """Where an instance's server is, as last read from the database."""

    instance_id: uuid.UUID
    tenant_id: uuid.UUID
    phase: str
    host: str | None
    port: int | None
    desired_state: str = DesiredState.RUNNING
    wake_on_request: bool = False
    culled: bool = False

    @property
    def wakeable(self) -> bool:
        """Traffic may (re)start it: culled for idleness, or already on its way up,
        with wake-on-request on."""
        if not self.wake_on_request:
            return False
        if self.desired_state == DesiredState.STOPPED:
            return self.culled
        return self.phase in (Phase.PENDING, Phase.STARTING)

    @property
    def address(self) -> str | None:
        """``host:port`` of a running server (IPv6 hosts bracketed), else None."""
        if self.phase != Phase.RUNNING or not self.host or not self.port:
            return None
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def credential(headers: Mapping[str, str]) -> str | None:
    """The caller's token: ``Authorization: Bearer ...``, else ``X-Chroma-Token``
    (the two headers Chroma's own token-auth client sends)."""
    return bearer_from_header(headers.get("authorization")) or headers.get(TOKEN_HEADER) or None


def parse_instance_id(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise NotFoundError(f"instance {value[:64]} not found") from None


class Access:
    """Decides whether a token may reach an instance and returns its route."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        hub: EventHub,
        tokens: TokenCache,
        settings: ProxySettings,
        failures: AuthFailures | None = None,
    ) -> None:
        self._sessions = sessions
        self._hub = hub
        self._tokens = tokens
        self._failures = failures
        self._retry_after = settings.retry_after
        self._routes: TtlCache[uuid.UUID, Route] = TtlCache(
            settings.route_cache_ttl, settings.cache_size
        )

    async def principal(self, token: str | None, client: str | None = None) -> Principal:
        """The token's principal, or ``UnauthorizedError`` (missing, unknown, revoked,
        expired); refusals are counted against the ``client``'s address."""
        if not token:
            raise UnauthorizedError("missing token (Authorization: Bearer or X-Chroma-Token)")
        async with self._sessions() as session:  # no connection unless the cache misses
            principal = await authenticate(
                session, token, self._tokens, failures=self._failures, client=client
            )
            await session.commit()
        return principal

    async def route(self, instance_id: uuid.UUID, *, fresh: bool = False) -> Route | None:
        """The instance's route (None if it does not exist or is deleted)."""
        generation = self._hub.latest_seq
        if not fresh:
            cached = self._routes.get(instance_id, generation)
            if cached is not None:
                return cached
        async with self._sessions() as session:
            row = (
                await session.execute(
                    select(
                        Instance.tenant_id,
                        Instance.phase,
                        Instance.desired_state,
                        Instance.endpoint_host,
                        Instance.endpoint_port,
                        Instance.wake_on_request,
                        Instance.culled_at,
                    ).where(Instance.id == instance_id)
                )
            ).one_or_none()
        if row is None or DesiredState.DELETED in (row.desired_state, row.phase):
            self._routes.drop(instance_id)
            return None
        route = Route(
            instance_id,
            row.tenant_id,
            row.phase,
            row.endpoint_host,
            row.endpoint_port,
            desired_state=row.desired_state,
            wake_on_request=row.wake_on_request,
            culled=row.culled_at is not None,
        )
        self._routes.put(instance_id, route, generation)
        return route

    def forget(self, instance_id: uuid.UUID) -> None:
        """Drop a cached route (its endpoint refused a connection)."""
        self._routes.drop(instance_id)

    async def authorize(self, principal: Principal, instance_id: uuid.UUID) -> Route:
        """The route to a running instance the caller (see ``principal``) may use.

        Raises ``ForbiddenError`` (403) for a token without tenant or admin scope,
        ``NotFoundError`` (404) for an instance that does not exist or belongs to
        another tenant, ``InstanceNotRunningError`` (503, Retry-After) otherwise.
        """
        if not principal.is_admin and TENANT_SCOPE not in principal.scopes:
            raise ForbiddenError("this token may not use the data plane")
        route = await self.route(instance_id)
        if route is None or not principal.can_see(route.tenant_id):
            raise NotFoundError(f"instance {instance_id} not found")
        return self.require_running(route)

    def require_running(self, route: Route) -> Route:
        if route.address is None:
            raise InstanceNotRunningError(
                f"instance {route.instance_id} is {route.phase}", self._retry_after
            )
        return route
