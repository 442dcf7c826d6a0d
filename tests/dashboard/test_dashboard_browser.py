"""The dashboard in Debian's chromium (Playwright), against the service with the
reconciler and real Chroma servers: sign in, launch, watch it run without a
reload, stop, lose the event socket, and catch up on what happened meanwhile."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Browser, Page, async_playwright, expect

from chroma_orch import dashboard
from chroma_orch.app import create_app
from tests.conftest import ADMIN_TOKEN, make_settings, require_program
from tests.e2e.service import kill_chroma_processes
from tests.events.live import LiveServer
from tests.helpers import bearer, create_tenant, wait_phase

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    chromium = require_program("chromium")
    async with async_playwright() as playwright:
        instance = await playwright.chromium.launch(
            executable_path=chromium, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield instance
        finally:
            await instance.close()


@pytest.fixture
async def server(database_url: str, tmp_path: Path) -> AsyncIterator[LiveServer]:
    settings = make_settings(database_url, tmp_path / "data")
    app = create_app(settings)
    dashboard.mount(app)
    try:
        async with LiveServer(app) as live:
            yield live
    finally:
        kill_chroma_processes(settings.data_dir)


async def signed_in(browser: Browser, server: LiveServer, token: str, width: int = 1280) -> Page:
    """A new page of the dashboard, signed in with ``token``, its socket live."""
    page = await browser.new_page(viewport={"width": width, "height": 900})
    await page.goto(f"{server.url}/dashboard/")
    await page.fill("#token", token)
    await page.click("#login-form button")
    await expect(page.locator("#link")).to_have_text("live")
    return page


async def test_dashboard_follows_an_instance_live(server: LiveServer, browser: Browser) -> None:
    async with httpx.AsyncClient(base_url=server.url, headers=bearer(ADMIN_TOKEN)) as http:
        _, token = await create_tenant(http, "acme")
    page = await browser.new_page(viewport={"width": 1280, "height": 800})
    sockets: list[str] = []
    page.on("websocket", lambda ws: sockets.append(ws.url))
    refused: list[str] = []  # what the Content-Security-Policy blocked, if anything
    page.on("console", lambda m: refused.append(m.text) if "Security Policy" in m.text else None)
    loaded = await page.goto(f"{server.url}/dashboard/")
    assert loaded is not None
    assert "frame-ancestors 'none'" in (await loaded.header_value("content-security-policy") or "")
    await page.fill("#token", token)
    await page.click("#login-form button")
    await expect(page.locator("#link")).to_have_text("live")
    assert all(token not in url for url in sockets)  # never in the URL

    await page.fill("#name", "web")
    await page.click("#launch-form button")
    row = page.locator("tr", has=page.locator("strong", has_text="web"))
    await expect(row).to_have_attribute("data-phase", "running", timeout=30_000)
    await expect(row.locator("td").nth(4)).to_contain_text("http://127.0.0.1:")
    instance_id = await row.get_attribute("data-id")
    assert instance_id is not None

    await row.locator("button[data-action=stop]").click()
    await expect(row).to_have_attribute("data-phase", "stopped", timeout=30_000)

    # Drop the event socket and hold off the reconnect while the instance starts.
    await page.evaluate("() => { window.chromaOrch.retry = 4; window.chromaOrch.socket.close(); }")
    await expect(page.locator("#link")).to_have_text("reconnecting")
    async with httpx.AsyncClient(base_url=server.url, headers=bearer(token)) as http:
        assert (await http.post(f"/v1/instances/{instance_id}/start")).status_code == 202
        await wait_phase(http, instance_id, "running")
    assert await row.get_attribute("data-phase") == "stopped"  # not connected: not told yet
    await expect(row).to_have_attribute("data-phase", "running", timeout=15_000)
    await expect(page.locator("#link")).to_have_text("live")
    assert "since=" in sockets[-1]  # it resumed from its last seq, no reload

    await row.locator("button[data-action=logs]").click()
    await expect(page.locator("#logs-state")).to_have_text("following")
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)

    page.on("dialog", lambda dialog: dialog.accept())
    await row.locator("button[data-action=delete]").click()
    await expect(row).to_have_count(0, timeout=30_000)
    assert refused == []
