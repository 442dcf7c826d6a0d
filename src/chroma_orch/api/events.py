"""WebSocket streams: /v1/events (state diffs, resumable) and live instance logs."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(tags=["events"])
