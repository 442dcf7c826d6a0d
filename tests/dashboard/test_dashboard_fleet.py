"""The fleet view in the dashboard (Debian's chromium via Playwright), against the
service with the reconciler and real Chroma servers: an admin sees the counts, the
start-time histogram and the failures list drawn, and kept current from the event
stream (throttled to a read a second) as an instance starts and stops; a tenant
never sees the section."""

from __future__ import annotations

import time

import httpx
from playwright.async_api import Browser, expect

from tests.conftest import ADMIN_TOKEN
from tests.dashboard.test_dashboard_browser import browser, server, signed_in
from tests.events.live import LiveServer
from tests.helpers import bearer, create_tenant, wait_phase

__all__ = ["browser", "server"]

LIVE = 60_000


async def test_the_fleet_view_draws_and_follows_an_instance(
    server: LiveServer, browser: Browser
) -> None:
    async with httpx.AsyncClient(base_url=server.url, headers=bearer(ADMIN_TOKEN)) as admin:
        _, token = await create_tenant(admin, "acme")
        page = await signed_in(browser, server, ADMIN_TOKEN)
        opened = time.monotonic()
        fleet = page.locator("#fleet")
        await expect(fleet).to_be_visible()
        await expect(page.locator("#fleet-total")).to_have_text("0 instances")
        await expect(page.locator("#fleet-failures-empty")).to_be_visible()
        await expect(page.locator("#fleet-starts svg")).to_have_attribute("data-count", "0")

        async with httpx.AsyncClient(base_url=server.url, headers=bearer(token)) as tenant:
            created = await tenant.post("/v1/instances", json={"name": "a"})
            instance_id = created.json()["instance"]["id"]
            await wait_phase(tenant, instance_id, "running")
            running = page.locator("#fleet-phases g[data-key=running]")
            await expect(running).to_have_attribute("data-count", "1", timeout=LIVE)
            await expect(page.locator("#fleet-total")).to_have_text("1 instances")
            local = page.locator("#fleet-runtimes g[data-key=local]")
            await expect(local).to_have_attribute("data-count", "1")
            await expect(page.locator("#fleet-starts svg")).to_have_attribute("data-count", "1")
            assert await page.locator("#fleet-starts rect.fleet-hist-bar").count() == 20
            summary = page.locator("#fleet-starts-summary")
            await expect(summary).to_contain_text("1 starts in the last 60 min")

            await tenant.post(f"/v1/instances/{instance_id}/stop")
            await wait_phase(tenant, instance_id, "stopped")
            stopped = page.locator("#fleet-phases g[data-key=stopped]")
            await expect(stopped).to_have_attribute("data-count", "1", timeout=LIVE)
            await expect(running).to_have_count(0)

        reads = await page.evaluate("window.chromaOrch.fleet.reads")
        assert 2 <= reads <= time.monotonic() - opened + 2  # at most one read a second

        tenant_page = await signed_in(browser, server, token)
        await expect(tenant_page.locator("tr[data-id]")).to_have_count(1)
        await expect(tenant_page.locator("#fleet")).to_be_hidden()
