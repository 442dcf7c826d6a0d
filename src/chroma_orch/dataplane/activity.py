"""Each instance's last data-plane activity, written in batches.

``touch`` is a dict assignment on the request path; ``run_once`` writes every
instance touched since the previous pass in one UPDATE (never moving a
timestamp backwards), every ``activity_flush_interval`` seconds and once more at
shutdown. A failed write keeps its entries for the next pass. The idle culler
reads ``instances.last_activity_at``; its resolution is the flush interval (plus,
behind Nginx, the auth cache's lifetime, since only authorisations are seen).
"""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime

from sqlalchemy import DateTime, bindparam, cast, func, or_, select, update
from sqlalchemy.dialects.postgresql import ARRAY, UUID
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chroma_orch.db.models import Instance, table_of
from chroma_orch.loops import Loops

log = logging.getLogger(__name__)

_I = table_of(Instance)
_SEEN = (
    func.unnest(
        cast(bindparam("ids"), ARRAY(UUID(as_uuid=True))),
        cast(bindparam("ats"), ARRAY(DateTime(timezone=True))),
    )
    .table_valued("id", "at")
    .render_derived(name="seen")
)
_UPDATE = (
    update(_I)
    .where(
        _I.c.id == _SEEN.c.id,
        or_(_I.c.last_activity_at.is_(None), _I.c.last_activity_at < _SEEN.c.at),
    )
    .values(last_activity_at=_SEEN.c.at)
)
"""Each instance's last activity, moved forward only."""
_LOCK_TIMEOUT = select(func.set_config("lock_timeout", "2s", True))
"""For this transaction: give up rather than wait behind a long write."""


class ActivityRecorder:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], interval: float) -> None:
        self._sessions = sessions
        self._interval = interval
        self._pending: dict[uuid.UUID, datetime] = {}

    def touch(self, instance_id: uuid.UUID) -> None:
        self._pending[instance_id] = datetime.now(UTC)

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def run_once(self) -> int:
        """Write what was touched since the last pass; returns how many instances."""
        batch, self._pending = self._pending, {}
        if not batch:
            return 0
        ids = sorted(batch)
        try:
            async with self._sessions() as session:
                await session.execute(_LOCK_TIMEOUT)
                await session.execute(_UPDATE, {"ids": ids, "ats": [batch[i] for i in ids]})
                await session.commit()
        except BaseException:
            for instance_id, at in batch.items():  # keep them for the next pass
                if self._pending.get(instance_id, at) <= at:
                    self._pending[instance_id] = at
            raise
        return len(batch)

    def register(self, loops: Loops) -> None:
        """Write every ``activity_flush_interval`` seconds while ``loops`` run."""
        loops.every("dataplane-activity", self.run_once, self._interval)

    async def flush(self) -> None:
        """Write what is still pending (at shutdown, once the loops have stopped)."""
        try:
            await self.run_once()
        except Exception:
            log.exception("final last-activity write failed instances=%d", self.pending)
