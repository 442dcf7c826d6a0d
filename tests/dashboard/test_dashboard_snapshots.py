"""An instance's snapshots in the dashboard (Debian's chromium via Playwright), against
the service with the reconciler, real Chroma servers and the local snapshot store:
taken from the page, followed live from the event stream (also those taken or deleted
elsewhere), and a restore that asks first."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest
from playwright.async_api import Browser, Dialog, Locator, Page, expect

from tests.conftest import ADMIN_TOKEN
from tests.dashboard.test_dashboard_browser import browser, server, signed_in
from tests.events.live import LiveServer
from tests.helpers import bearer, create_tenant, wait_phase

__all__ = ["browser", "server"]  # the fixtures, shared with the other browser test

LIVE = 60_000
"""Milliseconds a change may take to show (a snapshot restarts nothing, a restore does)."""


@pytest.fixture
async def tenant_http(server: LiveServer) -> AsyncIterator[httpx.AsyncClient]:
    """A tenant's API client (its token in the Authorization header)."""
    async with httpx.AsyncClient(base_url=server.url, headers=bearer(ADMIN_TOKEN)) as admin:
        _, token = await create_tenant(admin, "acme")
    async with httpx.AsyncClient(base_url=server.url, headers=bearer(token)) as http:
        yield http


def _snapshot_row(page: Page, kind: str) -> Locator:
    return page.locator(f"#snapshot-rows tr[data-kind={kind}]")


async def test_snapshots_live_and_a_confirmed_restore(
    server: LiveServer, browser: Browser, tenant_http: httpx.AsyncClient
) -> None:
    http = tenant_http
    created = await http.post("/v1/instances", json={"name": "web"})
    instance_id = created.json()["instance"]["id"]
    await wait_phase(http, instance_id, "running")
    token = http.headers["Authorization"].removeprefix("Bearer ")
    page = await signed_in(browser, server, token)
    row = page.locator(f"tr[data-id='{instance_id}']")
    await expect(row).to_have_attribute("data-phase", "running")

    await row.locator("button[data-action=snapshot]").click()
    manual = _snapshot_row(page, "manual")
    await expect(manual).to_have_attribute("data-phase", "ready", timeout=LIVE)
    await expect(manual.locator("td.size")).to_contain_text("iB")
    await expect(page.locator("#snapshots-name")).to_have_text("web")
    await expect(row).to_have_attribute("data-phase", "running")  # not the snapshot's phase

    # taken and deleted elsewhere: the page learns it from the event stream alone
    other = (await http.post(f"/v1/instances/{instance_id}/snapshots")).json()["id"]
    other_row = page.locator(f"#snapshot-rows tr[data-snapshot-id='{other}']")
    await expect(other_row).to_have_attribute("data-phase", "ready", timeout=LIVE)
    assert (await http.delete(f"/v1/snapshots/{other}")).status_code == 202
    await expect(other_row).to_have_count(0, timeout=LIVE)

    # the first confirmation is refused, the second accepted: one restore
    questions: asyncio.Queue[str] = asyncio.Queue()

    def answer(accept: bool) -> Callable[[Dialog], Awaitable[None]]:
        async def handle(dialog: Dialog) -> None:
            await questions.put(dialog.message)
            await (dialog.accept() if accept else dialog.dismiss())

        return handle

    for accept in (False, True):
        page.once("dialog", answer(accept))
        await manual.locator("button[data-action=restore]").click()
        question = await asyncio.wait_for(questions.get(), 10)
        assert "pre_restore" in question
    kept = _snapshot_row(page, "pre_restore")
    await expect(kept).to_have_attribute("data-phase", "ready", timeout=LIVE)
    await expect(row).to_have_attribute("data-phase", "running", timeout=LIVE)
    instance = (await http.get(f"/v1/instances/{instance_id}")).json()
    assert instance["generation"] == 2  # one restore: the dismissed one asked nothing
    listed = (await http.get(f"/v1/instances/{instance_id}/snapshots")).json()["items"]
    assert sorted(s["kind"] for s in listed) == ["manual", "pre_restore"]
    assert await page.locator("#action-error").is_hidden()
