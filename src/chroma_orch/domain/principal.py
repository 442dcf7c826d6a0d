"""Who is calling: the identity a token stands for, and what it may see."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime

from chroma_orch.errors import ForbiddenError, NotFoundError

ADMIN_SCOPE = "admin"
TENANT_SCOPE = "tenant"


@dataclass(frozen=True)
class Principal:
    token_id: uuid.UUID
    tenant_id: uuid.UUID | None
    scopes: tuple[str, ...]
    expires_at: datetime | None = field(default=None, compare=False)
    """When the token expires (not part of its identity: a new expiry is the same caller)."""

    @property
    def is_admin(self) -> bool:
        return ADMIN_SCOPE in self.scopes

    def require_admin(self) -> None:
        if not self.is_admin:
            raise ForbiddenError("this operation needs an admin token")

    def can_see(self, tenant_id: uuid.UUID) -> bool:
        return self.is_admin or self.tenant_id == tenant_id

    def tenant_scope(self, requested: uuid.UUID | None) -> uuid.UUID:
        """The tenant an operation acts on: a tenant token's own, or the admin's choice."""
        if self.is_admin:
            if requested is None:
                raise ForbiddenError("an admin must name the tenant (tenant_id)")
            return requested
        assert self.tenant_id is not None
        if requested is not None and requested != self.tenant_id:
            raise NotFoundError("tenant not found")
        return self.tenant_id


SYSTEM = Principal(token_id=uuid.UUID(int=0), tenant_id=None, scopes=(ADMIN_SCOPE,))
"""The service itself, for actions it takes on its own (idle culling, waking)."""
