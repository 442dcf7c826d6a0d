"""Tenants and their tokens; the admin token's bootstrap."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from chroma_orch.db.locks import NamedLock, lock
from chroma_orch.db.models import ApiToken, Tenant
from chroma_orch.domain.auth import hash_token, issue_token
from chroma_orch.domain.plans import require_plan
from chroma_orch.domain.principal import ADMIN_SCOPE, TENANT_SCOPE, Principal
from chroma_orch.domain.schemas import TenantCreate, TenantUpdate, TokenCreate
from chroma_orch.domain.token_cache import TokenCache
from chroma_orch.errors import ConflictError, NotFoundError


class TenantService:
    def __init__(
        self, session: AsyncSession, principal: Principal, tokens: TokenCache | None = None
    ):
        self.session = session
        self.principal = principal
        self.token_cache = tokens

    async def create(self, data: TenantCreate) -> Tenant:
        self.principal.require_admin()
        await lock(self.session, NamedLock.TENANT, data.name)
        if await self.by_name(data.name) is not None:
            raise ConflictError(f"tenant {data.name!r} already exists")
        tenant = Tenant(name=data.name, idle_timeout_seconds=data.idle_timeout_seconds)
        self.session.add(tenant)
        await self.session.flush()
        return tenant

    async def get_or_create(self, name: str) -> Tenant:
        """The tenant named ``name``, created when missing (admin only)."""
        self.principal.require_admin()
        existing = await self.by_name(name)
        return existing or await self.create(TenantCreate(name=name))

    async def by_name(self, name: str) -> Tenant | None:
        return await self.session.scalar(select(Tenant).where(Tenant.name == name))

    async def get(self, tenant_id: uuid.UUID) -> Tenant:
        tenant = await self.session.get(Tenant, tenant_id)
        if tenant is None or not self.principal.can_see(tenant.id):
            raise NotFoundError(f"tenant {tenant_id} not found")
        return tenant

    async def all(self) -> list[Tenant]:
        query = select(Tenant).order_by(Tenant.created_at, Tenant.id)
        if not self.principal.is_admin:
            query = query.where(Tenant.id == self.principal.tenant_id)
        return list(await self.session.scalars(query))

    async def update(self, tenant_id: uuid.UUID, data: TenantUpdate) -> Tenant:
        self.principal.require_admin()
        tenant = await self.get(tenant_id)
        if data.plan is not None:
            await require_plan(self.session, data.plan)
        for field, value in data.model_dump(exclude_unset=True).items():
            setattr(tenant, field, value)
        await self.session.flush()
        return tenant

    async def issue(self, tenant_id: uuid.UUID, data: TokenCreate) -> tuple[ApiToken, str]:
        self.principal.require_admin()
        tenant = await self.get(tenant_id)
        expires_at = None
        if data.expires_in_seconds is not None:
            expires_at = datetime.now(UTC) + timedelta(seconds=data.expires_in_seconds)
        return await issue_token(
            self.session,
            name=data.name,
            tenant_id=tenant.id,
            scopes=[TENANT_SCOPE],
            expires_at=expires_at,
        )

    async def tokens(self, tenant_id: uuid.UUID) -> list[ApiToken]:
        self.principal.require_admin()
        tenant = await self.get(tenant_id)
        return list(
            await self.session.scalars(
                select(ApiToken)
                .where(ApiToken.tenant_id == tenant.id)
                .order_by(ApiToken.created_at)
            )
        )

    async def revoke(self, token_id: uuid.UUID) -> ApiToken:
        self.principal.require_admin()
        token = await self.session.get(ApiToken, token_id)
        if token is None:
            raise NotFoundError(f"token {token_id} not found")
        if token.revoked_at is None:
            token.revoked_at = datetime.now(UTC)
            await self.session.flush()
            if self.token_cache is not None:  # other replicas hear of it from PostgreSQL
                self.token_cache.forget(token.token_hash)
        return token


async def ensure_admin_token(session: AsyncSession, configured: str | None) -> str | None:
    """Make sure an admin token exists. Returns a newly generated secret, to show once.

    A configured token is registered (hashed) if new; otherwise one is generated
    only when no usable admin token exists. Safe to run from several replicas.
    """
    await lock(session, NamedLock.ADMIN_TOKEN)
    if configured:
        found = await session.scalar(
            select(ApiToken.id).where(ApiToken.token_hash == hash_token(configured))
        )
        if found is None:
            await issue_token(
                session,
                name="admin (configured)",
                tenant_id=None,
                scopes=[ADMIN_SCOPE],
                token=configured,
            )
        return None
    usable = await session.scalar(
        select(ApiToken.id)
        .where(
            ApiToken.scopes.contains([ADMIN_SCOPE]),
            ApiToken.revoked_at.is_(None),
            (ApiToken.expires_at.is_(None)) | (ApiToken.expires_at > datetime.now(UTC)),
        )
        .limit(1)
    )
    if usable is not None:
        return None
    _, secret = await issue_token(
        session, name="admin (generated)", tenant_id=None, scopes=[ADMIN_SCOPE]
    )
    return secret


async def rotate_admin_token(session: AsyncSession) -> str:
    """Revoke every admin token and issue a new one (for an operator who lost it)."""
    await session.execute(
        update(ApiToken)
        .where(ApiToken.scopes.contains([ADMIN_SCOPE]), ApiToken.revoked_at.is_(None))
        .values(revoked_at=datetime.now(UTC))
    )
    _, secret = await issue_token(
        session, name="admin (rotated)", tenant_id=None, scopes=[ADMIN_SCOPE]
    )
    return secret
