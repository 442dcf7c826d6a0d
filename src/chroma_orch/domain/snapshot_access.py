"""Finding a snapshot a principal may see, and one whose data may be restored.

The row locks keep a restore's source from being deleted under it: whoever names a
snapshot as the data to load (a restore, a clone, an undelete) holds it ``FOR
SHARE`` until that is committed, and whoever marks one ``deleting`` holds it ``FOR
UPDATE`` (or skips it, when locked) and then asks, in a statement of its own, whether
an instance is restoring it. Either the delete sees the committed restore and refuses
or leaves the snapshot, or the restore waits and finds the snapshot ``deleting``.
"""

from __future__ import annotations

import uuid
from typing import Literal

from sqlalchemy.ext.asyncio import AsyncSession

from chroma_orch.db.models import Snapshot
from chroma_orch.domain.principal import Principal
from chroma_orch.domain.snapshot_states import SnapshotPhase
from chroma_orch.errors import ConflictError, NotFoundError


async def visible_snapshot(
    session: AsyncSession,
    principal: Principal,
    snapshot_id: uuid.UUID,
    *,
    lock: Literal["share", "update"] | None = None,
) -> Snapshot:
    """The snapshot, or ``NotFoundError`` (one of another tenant is not found either);
    ``lock``: its row locked ``FOR SHARE`` or ``FOR UPDATE`` until the transaction
    ends, and read as it is once locked."""
    snapshot = await session.get(
        Snapshot,
        snapshot_id,
        with_for_update=None if lock is None else {"read": lock == "share"},
        populate_existing=lock is not None,
    )
    if snapshot is None or not principal.can_see(snapshot.tenant_id):
        raise NotFoundError(f"snapshot {snapshot_id} not found")
    return snapshot


async def restorable_snapshot(
    session: AsyncSession, principal: Principal, snapshot_id: uuid.UUID, tenant_id: uuid.UUID
) -> Snapshot:
    """A ready snapshot whose data may go to an instance of ``tenant_id``: the
    tenant's own, or any for an admin (who may clone across tenants). Locked ``FOR
    SHARE``: no one marks it ``deleting`` before the caller's restore is committed."""
    snapshot = await visible_snapshot(session, principal, snapshot_id, lock="share")
    if snapshot.tenant_id != tenant_id and not principal.is_admin:
        raise NotFoundError(f"snapshot {snapshot_id} not found")
    if snapshot.phase != SnapshotPhase.READY:
        raise ConflictError(
            f"snapshot {snapshot_id} is {snapshot.phase}: only a ready snapshot can be restored"
        )
    return snapshot
