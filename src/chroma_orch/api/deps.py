"""Request-scoped dependencies: the unit of work, the caller, the services.

All are ``async def``: FastAPI runs a plain ``def`` dependency in a worker thread,
a thread hop per request for what is only an object construction."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import HTTPConnection

from chroma_orch.context import AppContext
from chroma_orch.db.outbox import commit, discard_pending
from chroma_orch.domain.auth import authenticate
from chroma_orch.domain.deletion import DeletionService
from chroma_orch.domain.instances import InstanceService
from chroma_orch.domain.plans import PlanService
from chroma_orch.domain.principal import Principal
from chroma_orch.domain.snapshot_schedules import ScheduleService
from chroma_orch.domain.snapshots import SnapshotService
from chroma_orch.domain.tenants import TenantService
from chroma_orch.domain.upgrades import UpgradeService
from chroma_orch.telemetry.context import log_context


def with_principal(principal: Principal) -> None:
    """Add the caller to the request's log context (ids only, never the token)."""
    fields = {"token": str(principal.token_id)}
    if principal.tenant_id is not None:
        fields["tenant"] = str(principal.tenant_id)
    log_context.set({**log_context.get(), **fields})


def app_context(connection: HTTPConnection) -> AppContext:
    """The app's context. The dependencies below read it here rather than depend on
    ``Context``: FastAPI resolves every occurrence of a dependency in a request's
    tree (a cache lookup each), which is CPU on every request for an attribute read."""
    ctx: AppContext = connection.app.state.ctx
    return ctx


async def get_context(request: Request) -> AppContext:
    return app_context(request)


Context = Annotated[AppContext, Depends(get_context)]


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """One request, one transaction: committed (with its events) when the handler
    returns, rolled back when it raises."""
    async with app_context(request).sessions() as session:
        try:
            yield session
        except BaseException:
            discard_pending(session)
            await session.rollback()
            raise
        await commit(session)


Session = Annotated[AsyncSession, Depends(get_session, scope="function")]


bearer = HTTPBearer(auto_error=False, description="An admin or tenant API token.")


def client_address(connection: HTTPConnection) -> str | None:
    """The client's address: the connection's peer, or the client a trusted proxy
    forwards for (``Settings.trusted_proxies``; rewritten by the proxy-headers
    middleware)."""
    return connection.client.host if connection.client else None


async def get_principal(
    request: Request,
    session: Session,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Principal:
    ctx = app_context(request)
    token = credentials.credentials if credentials else None
    principal = await authenticate(
        session, token, ctx.tokens, failures=ctx.auth_failures, client=client_address(request)
    )
    ctx.rate_limiter.check(principal.token_id)
    with_principal(principal)
    return principal


CurrentPrincipal = Annotated[Principal, Depends(get_principal)]


async def get_instances(
    request: Request, session: Session, principal: CurrentPrincipal
) -> InstanceService:
    ctx = app_context(request)
    return InstanceService(session, principal, ctx.policy, ctx.runtime)


async def get_tenants(
    request: Request, session: Session, principal: CurrentPrincipal
) -> TenantService:
    return TenantService(session, principal, app_context(request).tokens)


Instances = Annotated[InstanceService, Depends(get_instances)]


async def get_snapshots(
    request: Request, session: Session, principal: CurrentPrincipal, instances: Instances
) -> SnapshotService:
    return SnapshotService(session, principal, instances, app_context(request).snapshot_policy)


Snapshots = Annotated[SnapshotService, Depends(get_snapshots)]


async def get_schedules(
    session: Session, principal: CurrentPrincipal, instances: Instances
) -> ScheduleService:
    return ScheduleService(session, principal, instances)


Schedules = Annotated[ScheduleService, Depends(get_schedules)]


async def get_deletions(snapshots: Snapshots) -> DeletionService:
    return DeletionService(snapshots)


Deletions = Annotated[DeletionService, Depends(get_deletions)]


async def get_upgrades(request: Request, snapshots: Snapshots) -> UpgradeService:
    return UpgradeService(snapshots, app_context(request).runtime)


Upgrades = Annotated[UpgradeService, Depends(get_upgrades)]
Tenants = Annotated[TenantService, Depends(get_tenants)]


async def get_plans(session: Session, principal: CurrentPrincipal) -> PlanService:
    return PlanService(session, principal)


Plans = Annotated[PlanService, Depends(get_plans)]
