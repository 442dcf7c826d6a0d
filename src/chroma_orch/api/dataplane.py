"""The data plane: /i/{instance_id}/... to the tenant's own Chroma server."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(tags=["data plane"])
