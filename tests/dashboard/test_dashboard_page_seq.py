"""The dashboard's page and its event stream agree (Debian's chromium via Playwright,
no reconciler): an event the page was read after is in the page already, and
applying it again would put the row back to older values; a newer one is applied."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from playwright.async_api import Browser, Page, expect

from tests.conftest import ADMIN_TOKEN
from tests.dashboard.apps import quiet_dashboard_app
from tests.dashboard.test_dashboard_browser import browser, signed_in
from tests.events.live import LiveServer
from tests.helpers import bearer, create_tenant

__all__ = ["browser"]


@pytest.fixture
async def quiet_server(database_url: str, tmp_path: Path) -> AsyncIterator[LiveServer]:
    app: FastAPI = quiet_dashboard_app(database_url, tmp_path / "data")
    async with LiveServer(app) as live:
        yield live


async def _deliver(page: Page, instance_id: str, seq: int, phase: str) -> None:
    """A phase change reaching the page as the event socket would bring it."""
    event: dict[str, Any] = {
        "type": "event",
        "seq": seq,
        "event": "instance.phase_changed",
        "instance_id": instance_id,
        "after": {"phase": phase},
        "created_at": "2026-12-02T00:00:00+00:00",
    }
    await page.evaluate("(message) => handle(message)", event)


async def test_an_event_the_page_already_holds_is_not_applied_again(
    quiet_server: LiveServer, browser: Browser
) -> None:
    async with httpx.AsyncClient(base_url=quiet_server.url, headers=bearer(ADMIN_TOKEN)) as http:
        _, token = await create_tenant(http, "acme")
        created = await http.post("/v1/instances", json={"name": "web"}, headers=bearer(token))
        assert created.status_code == 202, created.text
        instance_id = created.json()["instance"]["id"]
    page = await signed_in(browser, quiet_server, ADMIN_TOKEN)
    row = page.locator(f"tr[data-id='{instance_id}']")
    await expect(row).to_have_attribute("data-phase", "pending")
    page_seq = await page.evaluate("() => window.chromaOrch.paging.seq")
    assert isinstance(page_seq, int)

    await _deliver(page, instance_id, page_seq, "failed")  # older than the page
    await expect(row).to_have_attribute("data-phase", "pending")
    await _deliver(page, instance_id, page_seq + 1, "starting")  # newer: applied
    await expect(row).to_have_attribute("data-phase", "starting")
