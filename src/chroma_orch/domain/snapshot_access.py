"""Finding a snapshot a principal may see, and one whose data may be restored."""

from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncSession

from chroma_orch.db.models import Snapshot
from chroma_orch.domain.principal import Principal
from chroma_orch.domain.snapshot_states import SnapshotPhase
from chroma_orch.errors import ConflictError, NotFoundError


async def visible_snapshot(
    session: AsyncSession, principal: Principal, snapshot_id: uuid.UUID
) -> Snapshot:
    """The snapshot, or ``NotFoundError`` (one of another tenant is not found either)."""
    snapshot = await session.get(Snapshot, snapshot_id)
    if snapshot is None or not principal.can_see(snapshot.tenant_id):
        raise NotFoundError(f"snapshot {snapshot_id} not found")
    return snapshot


async def restorable_snapshot(
    session: AsyncSession, principal: Principal, snapshot_id: uuid.UUID, tenant_id: uuid.UUID
) -> Snapshot:
    """A ready snapshot whose data may go to an instance of ``tenant_id``: the
    tenant's own, or any for an admin (who may clone across tenants)."""
    snapshot = await visible_snapshot(session, principal, snapshot_id)
    if snapshot.tenant_id != tenant_id and not principal.is_admin:
        raise NotFoundError(f"snapshot {snapshot_id} not found")
    if snapshot.phase != SnapshotPhase.READY:
        raise ConflictError(
            f"snapshot {snapshot_id} is {snapshot.phase}: only a ready snapshot can be restored"
        )
    return snapshot
