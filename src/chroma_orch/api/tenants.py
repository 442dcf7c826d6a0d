"""/v1/tenants and /v1/tokens: admin-only management of tenants and their tokens."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, status

from chroma_orch.api.deps import Tenants
from chroma_orch.api.problems import problem_responses
from chroma_orch.domain.schemas import (
    TenantCreate,
    TenantRead,
    TenantUpdate,
    TokenCreate,
    TokenCreated,
    TokenRead,
)
from chroma_orch.errors import (
    BadRequestError,
    ConflictError,
    ForbiddenError,
    NotFoundError,
    UnauthorizedError,
    ValidationFailedError,
)

router = APIRouter(
    prefix="/v1",
    tags=["tenants"],
    responses=problem_responses(
        BadRequestError, UnauthorizedError, ForbiddenError, ValidationFailedError
    ),
)
_ONE = problem_responses(NotFoundError)


@router.post(
    "/tenants",
    status_code=status.HTTP_201_CREATED,
    operation_id="createTenant",
    summary="Create a tenant (admin)",
    responses=problem_responses(ConflictError),
)
async def create_tenant(body: TenantCreate, tenants: Tenants) -> TenantRead:
    return TenantRead.model_validate(await tenants.create(body))


@router.get("/tenants", operation_id="listTenants", summary="List visible tenants")
async def list_tenants(tenants: Tenants) -> list[TenantRead]:
    return [TenantRead.model_validate(t) for t in await tenants.all()]


@router.get(
    "/tenants/{tenant_id}", operation_id="getTenant", summary="Get a tenant", responses=_ONE
)
async def get_tenant(tenant_id: uuid.UUID, tenants: Tenants) -> TenantRead:
    return TenantRead.model_validate(await tenants.get(tenant_id))


@router.patch(
    "/tenants/{tenant_id}",
    operation_id="updateTenant",
    summary="Change a tenant's settings or plan (admin)",
    responses=_ONE,
)
async def update_tenant(tenant_id: uuid.UUID, body: TenantUpdate, tenants: Tenants) -> TenantRead:
    return TenantRead.model_validate(await tenants.update(tenant_id, body))


@router.post(
    "/tenants/{tenant_id}/tokens",
    status_code=status.HTTP_201_CREATED,
    operation_id="createTenantToken",
    summary="Issue a token for a tenant (admin); the secret is shown once",
    responses=_ONE,
)
async def create_token(tenant_id: uuid.UUID, body: TokenCreate, tenants: Tenants) -> TokenCreated:
    row, secret = await tenants.issue(tenant_id, body)
    return TokenCreated(**TokenRead.model_validate(row).model_dump(), token=secret)


@router.get(
    "/tenants/{tenant_id}/tokens",
    operation_id="listTenantTokens",
    summary="List a tenant's tokens (admin)",
    responses=_ONE,
)
async def list_tokens(tenant_id: uuid.UUID, tenants: Tenants) -> list[TokenRead]:
    return [TokenRead.model_validate(t) for t in await tenants.tokens(tenant_id)]


@router.delete(
    "/tokens/{token_id}",
    operation_id="revokeToken",
    summary="Revoke a token (admin)",
    responses=_ONE,
)
async def revoke_token(token_id: uuid.UUID, tenants: Tenants) -> TokenRead:
    return TokenRead.model_validate(await tenants.revoke(token_id))
