"""Guarded-upgrade rows: what the API writes, and the reconciler's fenced changes.

Like snapshot rows (``db/snapshot_rows.py``), the reconciler changes an upgrade only
while it holds the lease of the upgrade's instance; each change queues its
``upgrade.phase_changed`` event, the caller commits through ``db.outbox.commit``.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from chroma_orch.db.instance_writes import Fence
from chroma_orch.db.models import InstanceUpgrade
from chroma_orch.db.row_changes import add_row, change_row


def upgrade_view(upgrade: InstanceUpgrade) -> dict[str, Any]:
    """What events say of an upgrade."""
    return {
        "id": str(upgrade.id),
        "phase": upgrade.phase,
        "from_version": upgrade.from_spec.get("chroma_version"),
        "to_version": upgrade.to_spec.get("chroma_version"),
        "rollout_id": None if upgrade.rollout_id is None else str(upgrade.rollout_id),
        "failure_reason": upgrade.failure_reason,
    }


async def add(session: AsyncSession, upgrade: InstanceUpgrade) -> InstanceUpgrade:
    """Insert ``upgrade`` with its ``upgrade.created`` event (flushed, not committed)."""
    return await add_row(session, upgrade, view=upgrade_view, event="upgrade.created")


async def fetch(session: AsyncSession, upgrade_id: uuid.UUID) -> InstanceUpgrade | None:
    return await session.get(InstanceUpgrade, upgrade_id, populate_existing=True)


async def change(
    session: AsyncSession, upgrade: InstanceUpgrade, values: Mapping[str, Any], fence: Fence
) -> bool:
    """Write ``values`` to ``upgrade`` while ``fence`` holds its instance's lease, with
    its ``upgrade.phase_changed`` event; False when the lease was lost."""
    return await change_row(
        session, upgrade, values, fence=fence, view=upgrade_view, event="upgrade.phase_changed"
    )


async def for_instance(session: AsyncSession, instance_id: uuid.UUID) -> list[InstanceUpgrade]:
    """The instance's upgrades, newest first."""
    found = await session.scalars(
        select(InstanceUpgrade)
        .where(InstanceUpgrade.instance_id == instance_id)
        .order_by(InstanceUpgrade.created_at.desc(), InstanceUpgrade.id)
    )
    return list(found)
