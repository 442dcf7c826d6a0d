"""Rollouts in the dashboard (Debian's chromium via Playwright), against the service
with the reconciler, the rollout loop and real Chroma servers: an admin sees a
rolling restart's waves fill in live from the event stream, pauses and resumes one,
and a tenant never sees the panel."""

from __future__ import annotations

import httpx
from playwright.async_api import Browser, expect

from tests.conftest import ADMIN_TOKEN
from tests.dashboard.test_dashboard_browser import browser, server, signed_in
from tests.events.live import LiveServer
from tests.helpers import bearer, create_tenant, wait_phase

__all__ = ["browser", "server"]

LIVE = 60_000
"""Milliseconds a change may take to show (each member is a real server's restart)."""


async def test_an_admin_follows_a_rolling_restart_wave_by_wave(
    server: LiveServer, browser: Browser
) -> None:
    async with httpx.AsyncClient(base_url=server.url, headers=bearer(ADMIN_TOKEN)) as admin:
        _, token = await create_tenant(admin, "acme")
        async with httpx.AsyncClient(base_url=server.url, headers=bearer(token)) as tenant:
            for name in ("a", "b"):
                created = await tenant.post("/v1/instances", json={"name": name})
                await wait_phase(tenant, created.json()["instance"]["id"], "running")
            page = await signed_in(browser, server, ADMIN_TOKEN)
            await expect(page.locator("#rollouts")).to_be_visible()
            await expect(page.locator("#rollouts-empty")).to_be_visible()

            # paused at once (pending or running: a real restart takes longer than this)
            body = {"waves": [50, 100], "pause_seconds": 1}
            rollout = (await admin.post("/v1/restarts", json=body)).json()
            paused = await admin.post(f"/v1/rollouts/{rollout['id']}/pause")
            assert paused.status_code == 200, paused.text
            row = page.locator(f"tr[data-rollout-id='{rollout['id']}']")
            await expect(row).to_have_attribute("data-state", "paused", timeout=LIVE)
            await row.locator("button[data-action=resume]").click()
            await expect(row).to_have_attribute("data-state", "succeeded", timeout=LIVE)
            for wave in (0, 1):
                cell = row.locator(f".wave[data-wave='{wave}']")
                await expect(cell).to_have_attribute("data-done", "1")
                await expect(cell).to_have_attribute("data-members", "1")
                await expect(cell).to_have_attribute("data-failed", "0")
            await expect(row.locator("button[data-action=cancel]")).to_be_disabled()

            tenant_page = await signed_in(browser, server, token)
            await expect(tenant_page.locator("tr[data-id]")).to_have_count(2)
            await expect(tenant_page.locator("#rollouts")).to_be_hidden()
            assert await tenant_page.locator("tr[data-rollout-id]").count() == 0
