"""Fan-out of the event log to WebSocket subscribers."""

from __future__ import annotations

from contextlib import AsyncExitStack

from fastapi import FastAPI

from chroma_orch.context import AppContext
from chroma_orch.events.listener import PgListener


async def start(app: FastAPI, ctx: AppContext, stack: AsyncExitStack, listener: PgListener) -> None:
    """Set up the stream's resources for the app's lifetime (on ``stack``)."""
