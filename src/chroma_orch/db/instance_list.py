"""The instance list's page query (``GET /v1/instances``): one statement per page,
in ``(created_at, id)`` order, that the indexes of migration 0018 serve without a
sequential scan of ``instances`` (``tests/api/test_instance_search.py`` checks the
plan at 10,000 rows)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, Select, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from chroma_orch.db.models import Instance, Tenant
from chroma_orch.db.outbox import newest_seq


@dataclass(frozen=True)
class PageFilter:
    """What one page asks for; ``None`` fields do not filter."""

    gone: bool
    """The deleted instances (phase and desired state both deleted) instead of the live."""
    limit: int
    tenant_id: uuid.UUID | None = None
    phase: str | None = None
    search: str | None = None
    """Prefix of the instance's name or of its tenant's name (matched as is, no wildcard)."""
    after: tuple[datetime, uuid.UUID] | None = None
    """The last row of the previous page: ``(created_at, id)``."""


def _search(prefix: str) -> ColumnElement[bool]:
    tenants = select(Tenant.id).where(Tenant.name.startswith(prefix, autoescape=True))
    return or_(Instance.name.startswith(prefix, autoescape=True), Instance.tenant_id.in_(tenants))


def page_statement(page: PageFilter) -> Select[Instance]:
    """The page, plus one row beyond it (there is a next page when it comes back)."""
    gone = (Instance.phase == "deleted") & (Instance.desired_state == "deleted")
    query = select(Instance).where(gone if page.gone else ~gone)
    if page.tenant_id is not None:
        query = query.where(Instance.tenant_id == page.tenant_id)
    if page.phase is not None:
        query = query.where(Instance.phase == page.phase)
    if page.search is not None:
        query = query.where(_search(page.search))
    if page.after is not None:
        created, last_id = page.after
        query = query.where(
            (Instance.created_at > created)
            | ((Instance.created_at == created) & (Instance.id > last_id))
        )
    return query.order_by(Instance.created_at, Instance.id).limit(page.limit + 1)


async def read_page(session: AsyncSession, page: PageFilter) -> tuple[int, list[Instance]]:
    """The event log's newest ``seq``, then the page: read in this order, every change
    up to that ``seq`` shows in the rows (a later one may too), so a client that
    follows ``/v1/events?since=seq`` misses nothing."""
    seq = await newest_seq(session)
    return seq, list(await session.scalars(page_statement(page)))
