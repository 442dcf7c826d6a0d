"""The instance list's page query (``GET /v1/instances``): one statement per page,
in ``(created_at, id)`` order, that the indexes of migration 0018 serve without a
sequential scan of ``instances`` (``tests/api/test_instance_search.py`` checks the
plan at 10,000 rows)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, select, tuple_, union
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


def _filtered(page: PageFilter, *columns: Any) -> Select[Any]:
    """``columns`` of the rows ``page`` asks for, but for its search."""
    gone = (Instance.phase == "deleted") & (Instance.desired_state == "deleted")
    query = select(*columns).where(gone if page.gone else ~gone)
    if page.tenant_id is not None:
        query = query.where(Instance.tenant_id == page.tenant_id)
    if page.phase is not None:
        query = query.where(Instance.phase == page.phase)
    if page.after is not None:
        # a row comparison: the index's range starts there (as an OR of the two cases,
        # each page walked every row before it and page n cost n pages)
        query = query.where(tuple_(Instance.created_at, Instance.id) > tuple_(*page.after))
    return query


def page_statement(page: PageFilter) -> Select[Instance]:
    """The page, plus one row beyond it (there is a next page when it comes back).

    A search is two pages, each served by its own index, then merged: the rows
    whose name has the prefix (``ix_instances_name_prefix``) and the rows of the
    tenants whose name has it (``ix_instances_tenant_created``). As one ``OR`` the
    planner walks the whole creation order filtering each row, and a prefix that
    matches little reads the whole fleet for it."""
    extra = page.limit + 1
    if page.search is None:
        everything = _filtered(page, Instance)
        return everything.order_by(Instance.created_at, Instance.id).limit(extra)
    prefix = page.search
    tenants = select(Tenant.id).where(Tenant.name.startswith(prefix, autoescape=True))
    keys = (Instance.created_at, Instance.id)
    by_name = _filtered(page, *keys).where(Instance.name.startswith(prefix, autoescape=True))
    by_tenant = _filtered(page, *keys).where(Instance.tenant_id.in_(tenants))
    found = union(
        by_name.order_by(*keys).limit(extra), by_tenant.order_by(*keys).limit(extra)
    ).subquery("found")
    return (
        select(Instance)
        .join(found, Instance.id == found.c.id)
        .order_by(found.c.created_at, found.c.id)
        .limit(extra)
    )


async def read_page(session: AsyncSession, page: PageFilter) -> tuple[int, list[Instance]]:
    """The event log's newest ``seq``, then the page: read in this order, every change
    up to that ``seq`` shows in the rows (a later one may too), so a client that
    follows ``/v1/events?since=seq`` misses nothing."""
    seq = await newest_seq(session)
    return seq, list(await session.scalars(page_statement(page)))
