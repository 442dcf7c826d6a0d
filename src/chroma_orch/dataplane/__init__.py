"""The data plane: routing tenants' Chroma clients to their servers."""

from __future__ import annotations

from contextlib import AsyncExitStack

from fastapi import FastAPI

from chroma_orch.context import AppContext


async def start(app: FastAPI, ctx: AppContext, stack: AsyncExitStack) -> None:
    """Set up the data plane's resources for the app's lifetime (on ``stack``)."""
