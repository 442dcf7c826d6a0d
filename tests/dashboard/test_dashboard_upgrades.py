"""Guarded upgrades in the dashboard (Debian's chromium via Playwright), against the
service with the reconciler and real Chroma servers of two versions (the installed one
and 1.5.8 in its own venv) plus a broken one, real data written through the data plane:
each row shows its Chroma version; an upgrade asked for from the page shows its phases
live from the event stream, then its outcome: succeeded, or rolled back with why."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Browser, Dialog, Locator, Page, expect

from chroma_orch import dashboard
from chroma_orch.app import create_app
from chroma_orch.runtimes.local.settings import LocalRuntimeSettings
from chroma_orch.settings import UpgradeSettings
from tests.chroma_versions import SECOND_VERSION
from tests.conftest import ADMIN_TOKEN, make_settings, port_window
from tests.dashboard.test_dashboard_browser import browser, signed_in
from tests.e2e.service import kill_chroma_processes
from tests.e2e.upgrade_helpers import BLIND, read_data, versions_env, write_data
from tests.events.live import LiveServer
from tests.helpers import bearer, create_tenant, wait_phase

__all__ = ["browser"]

LIVE = 120_000
"""Milliseconds an upgrade may take to show its outcome (a snapshot and real restarts)."""
RECORD_PHASES = """() => {
  window.upgradePhases = [];
  new MutationObserver(() => {
    for (const node of document.querySelectorAll("#instances [data-upgrade-phase]")) {
      const phase = node.getAttribute("data-upgrade-phase");
      if (window.upgradePhases.at(-1) !== phase) window.upgradePhases.push(phase);
    }
  }).observe(document.getElementById("instances"), { childList: true, subtree: true });
}"""
"""Every upgrade phase the row shows, in order (rows are redrawn on each message)."""


@pytest.fixture
async def server(database_url: str, tmp_path: Path) -> AsyncIterator[LiveServer]:
    """The service, its local runtime knowing Chroma 1.5.8 and a broken version."""
    env = versions_env(tmp_path / "tools")
    versions = json.loads(env["CHROMA_ORCH_LOCAL__CHROMA_VERSIONS"])
    local = LocalRuntimeSettings(
        port_range=port_window(), start_timeout=30, stop_grace=5, chroma_versions=versions
    )
    settings = make_settings(
        database_url, tmp_path / "data", local=local, upgrades=UpgradeSettings(timeout=60)
    )
    app = create_app(settings)
    dashboard.mount(app)
    try:
        async with LiveServer(app) as live:
            yield live
    finally:
        kill_chroma_processes(settings.data_dir)


async def _upgrade_from_the_page(page: Page, row: Locator, version: str) -> str:
    """Click "upgrade", answer the prompt with ``version``; the question asked."""
    asked: asyncio.Queue[str] = asyncio.Queue()

    async def answer(dialog: Dialog) -> None:
        await asked.put(dialog.message)
        await dialog.accept(version)

    page.once("dialog", answer)
    await row.locator("button[data-action=upgrade]").click()
    return await asyncio.wait_for(asked.get(), 10)


async def test_an_upgrade_from_the_page_shows_its_phases_and_outcome(
    server: LiveServer, browser: Browser
) -> None:
    async with httpx.AsyncClient(base_url=server.url, headers=bearer(ADMIN_TOKEN)) as admin:
        _, token = await create_tenant(admin, "acme")
    async with httpx.AsyncClient(base_url=server.url, headers=bearer(token)) as http:
        created = await http.post("/v1/instances", json={"name": "web"})
        instance_id = created.json()["instance"]["id"]
        installed = (await wait_phase(http, instance_id, "running"))["spec"]["chroma_version"]
    base = f"{server.url}/i/{instance_id}"
    await asyncio.to_thread(write_data, base, token)
    before = await asyncio.to_thread(read_data, base, token)
    page = await signed_in(browser, server, token, width=1400)
    row = page.locator(f"tr[data-id='{instance_id}']")
    version = row.locator("td.version")
    await expect(version).to_have_attribute("data-version", installed)
    await page.evaluate(RECORD_PHASES)

    question = await _upgrade_from_the_page(page, row, SECOND_VERSION)
    assert f"web (Chroma {installed})" in question
    status = row.locator(".upgrade")
    await expect(status).to_have_attribute("data-upgrade-phase", "succeeded", timeout=LIVE)
    await expect(status).to_contain_text(f"upgraded {installed} → {SECOND_VERSION}")
    await expect(version).to_have_attribute("data-version", SECOND_VERSION)
    shown = await page.evaluate("window.upgradePhases")
    assert shown[-3:] == ["upgrading", "probing", "succeeded"], shown  # from the events
    await expect(row.locator("button[data-action=upgrade]")).to_be_enabled()

    await _upgrade_from_the_page(page, row, BLIND)
    await expect(status).to_have_attribute("data-upgrade-phase", "rolled_back", timeout=LIVE)
    await expect(status.locator(".upgrade-failure")).to_contain_text(
        f"upgrade to {BLIND} rolled back: ParityMismatch"
    )
    missing = "collection default_database/docs is missing"
    await expect(status.locator(".upgrade-difference")).to_contain_text([missing])
    await expect(row).to_contain_text("UpgradeRolledBack")
    await expect(version).to_have_attribute("data-version", SECOND_VERSION)
    assert "rolling_back" in await page.evaluate("window.upgradePhases")
    assert await asyncio.to_thread(read_data, base, token) == before

    await _upgrade_from_the_page(page, row, "9.9.9")
    await expect(page.locator("#action-error")).to_contain_text("upgrade: ")
    await expect(page.locator("#action-error")).to_contain_text("9.9.9")
