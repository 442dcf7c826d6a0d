"""Request-scoped dependencies: the unit of work, the caller, the services.

All are ``async def``: FastAPI runs a plain ``def`` dependency in a worker thread,
a thread hop per request for what is only an object construction."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
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


@dataclass(frozen=True)
class UnitOfWork:
    """A request's unit of work: one session (one transaction) and the caller it
    authenticated, with the app's context."""

    session: AsyncSession
    principal: Principal
    ctx: AppContext


bearer = HTTPBearer(auto_error=False, description="An admin or tenant API token.")


def client_address(connection: HTTPConnection) -> str | None:
    """The client's address: the connection's peer, or the client a trusted proxy
    forwards for (``Settings.trusted_proxies``; rewritten by the proxy-headers
    middleware)."""
    return connection.client.host if connection.client else None


async def get_unit(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> AsyncIterator[UnitOfWork]:
    """One request, one transaction, its caller authenticated in it: committed (with
    its events) when the handler returns, rolled back when it raises. One dependency
    rather than a session and a principal depending on it: FastAPI's solving costs
    CPU per dependency of every request."""
    ctx = app_context(request)
    async with ctx.sessions() as session:
        try:
            principal = await _caller(request, ctx, session, credentials)
            yield UnitOfWork(session, principal, ctx)
        except BaseException:
            discard_pending(session)
            await session.rollback()
            raise
        await commit(session)


Unit = Annotated[UnitOfWork, Depends(get_unit, scope="function")]


async def _caller(
    request: Request,
    ctx: AppContext,
    session: AsyncSession,
    credentials: HTTPAuthorizationCredentials | None,
) -> Principal:
    """The request's caller, authenticated and within its rate limit."""
    token = credentials.credentials if credentials else None
    principal = await authenticate(
        session, token, ctx.tokens, failures=ctx.auth_failures, client=client_address(request)
    )
    ctx.rate_limiter.check(principal.token_id)
    with_principal(principal)
    return principal


async def get_instances(unit: Unit) -> InstanceService:
    return InstanceService(unit.session, unit.principal, unit.ctx.policy, unit.ctx.runtime)


async def get_tenants(unit: Unit) -> TenantService:
    return TenantService(unit.session, unit.principal, unit.ctx.tokens)


Instances = Annotated[InstanceService, Depends(get_instances)]


async def get_snapshots(unit: Unit, instances: Instances) -> SnapshotService:
    return SnapshotService(unit.session, unit.principal, instances, unit.ctx.snapshot_policy)


Snapshots = Annotated[SnapshotService, Depends(get_snapshots)]


async def get_schedules(unit: Unit, instances: Instances) -> ScheduleService:
    return ScheduleService(unit.session, unit.principal, instances)


Schedules = Annotated[ScheduleService, Depends(get_schedules)]


async def get_deletions(snapshots: Snapshots) -> DeletionService:
    return DeletionService(snapshots)


Deletions = Annotated[DeletionService, Depends(get_deletions)]


async def get_upgrades(unit: Unit, snapshots: Snapshots) -> UpgradeService:
    return UpgradeService(snapshots, unit.ctx.runtime)


Upgrades = Annotated[UpgradeService, Depends(get_upgrades)]
Tenants = Annotated[TenantService, Depends(get_tenants)]


async def get_plans(unit: Unit) -> PlanService:
    return PlanService(unit.session, unit.principal)


Plans = Annotated[PlanService, Depends(get_plans)]
