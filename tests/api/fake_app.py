"""The service on the fake runtime (tests/fake_runtime, registered as a plugin), whose
small ``SpecSupport`` (versions 1.5.9 and 1.5.8, 256..8192 MiB, Fargate-like CPU units)
lets the spec tests run without the local or ECS runtimes' own rules."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from chroma_orch.app import create_app
from tests.conftest import ADMIN_TOKEN, make_settings
from tests.fake_runtime import World, world
from tests.runtimes.test_registry import register


@asynccontextmanager
async def fake_service(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **overrides: object
) -> AsyncIterator[tuple[httpx.AsyncClient, FastAPI, World]]:
    """An admin client of the service on a fresh fake world (``overrides``: settings)."""
    register(tmp_path, monkeypatch, "chroma_orch_fake_runtime", fake="tests.fake_runtime:build")
    name = f"specs-{uuid.uuid4().hex}"
    monkeypatch.setenv("CHROMA_ORCH_FAKE__WORLD", name)
    servers = world(name)
    settings = make_settings(database_url, tmp_path / "data", runtime="fake", **overrides)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://testserver",
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        ) as http:
            yield http, app, servers
