"""The instance list: pages of 1-200 in creation order, narrowed by tenant, phase and
a search (a prefix of the instance's or its tenant's name), each page with the
event log's ``seq`` to follow ``/v1/events`` from (the dashboard's table at 10,000
instances)."""

from __future__ import annotations

import base64
import unicodedata
import uuid
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from chroma_orch.db.instance_list import PageFilter, read_page
from chroma_orch.db.models import Instance
from chroma_orch.domain.principal import Principal
from chroma_orch.domain.states import Phase
from chroma_orch.errors import BadRequestError, ValidationFailedError

SEARCH_MAX = 63
"""Names are at most 63 characters: a longer prefix matches nothing."""


def check_search(search: str) -> str:
    """The search as matched; 422 when empty, too long, or holding a control character."""
    if not 1 <= len(search) <= SEARCH_MAX:
        raise ValidationFailedError(f"search must be 1-{SEARCH_MAX} characters")
    if any(unicodedata.category(char).startswith("C") for char in search):
        raise ValidationFailedError("search must not contain control characters")
    return search


def encode_cursor(instance: Instance) -> str:
    raw = f"{instance.created_at.isoformat()}|{instance.id}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        created, _, instance_id = base64.urlsafe_b64decode(padded).decode().partition("|")
        return datetime.fromisoformat(created), uuid.UUID(instance_id)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequestError("invalid cursor") from exc


async def list_page(
    session: AsyncSession,
    principal: Principal,
    *,
    phase: Phase | None,
    tenant_id: uuid.UUID | None,
    search: str | None,
    limit: int,
    cursor: str | None,
    deleted: bool,
) -> tuple[int, list[Instance], str | None]:
    """``(seq, rows, next_cursor)``: a tenant sees only its own instances (its
    ``tenant_id`` wins over the one asked for, as before)."""
    page = PageFilter(
        gone=deleted,
        limit=limit,
        tenant_id=principal.tenant_id if not principal.is_admin else tenant_id,
        phase=phase.value if phase is not None else None,
        search=check_search(search) if search is not None else None,
        after=decode_cursor(cursor) if cursor is not None else None,
    )
    seq, rows = await read_page(session, page)
    next_cursor = encode_cursor(rows[limit - 1]) if len(rows) > limit else None
    return seq, rows[:limit], next_cursor
