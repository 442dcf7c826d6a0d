"""The dashboard at 10,000 instances (Debian's chromium via Playwright), against the
service with the rows written straight into the database and no reconciler: the
first page renders without the whole fleet, the event socket resumes from the page's
seq (no snapshot of 10,000 instances), a change on the page patches its row's cells
in place, a change elsewhere only shows a "refresh" button, and search, the phase
filter and next/previous page on the server. Timings are measured in the browser
(performance.now()) and printed; the bounds asserted are generous."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from playwright.async_api import Browser, Page, WebSocket, expect
from sqlalchemy.ext.asyncio import AsyncEngine
from websockets.asyncio.client import connect

from tests.conftest import ADMIN_TOKEN
from tests.dashboard.apps import quiet_dashboard_app
from tests.dashboard.test_dashboard_browser import browser
from tests.events.live import LiveServer
from tests.fleet_rows import insert_fleet
from tests.helpers import bearer

__all__ = ["browser"]

FLEET = 10_000
BOUND_MS = 5_000
"""Generous: the issue's figure is 1 s (reported, not asserted: the machine is shared)."""

ROWS = "() => document.querySelectorAll('#instances tr').length"
LIVE = "document.querySelector('#link').textContent === 'live'"


@pytest.fixture
async def fleet_server(database_url: str, tmp_path: Path) -> AsyncIterator[LiveServer]:
    app: FastAPI = quiet_dashboard_app(database_url, tmp_path / "data")
    async with LiveServer(app) as live:
        engine: AsyncEngine = app.state.ctx.engine
        await insert_fleet(engine, instances=FLEET, tenants=100)
        yield live


async def _now(page: Page) -> float:
    now: float = await page.evaluate("() => performance.now()")
    return now


async def _until(page: Page, condition: str) -> float:
    """performance.now() in the page once ``condition`` holds (checked every frame)."""
    handle = await page.wait_for_function(
        f"() => ({condition}) ? performance.now() : false", polling="raf", timeout=30_000
    )
    done: float = await handle.json_value()
    return done


async def _mark_cells(page: Page) -> None:
    await page.evaluate(
        "() => document.querySelectorAll('#instances tr, #instances td')"
        ".forEach((node) => { node._kept = true; })"
    )


async def _replaced_cells(page: Page) -> dict[str, Any]:
    """The rows and cells that are new nodes since ``_mark_cells`` (by row name)."""
    replaced: dict[str, Any] = await page.evaluate(
        """() => ({
          rows: [...document.querySelectorAll('#instances tr')].filter((r) => !r._kept).length,
          cells: [...document.querySelectorAll('#instances td')].filter((c) => !c._kept)
            .map((c) => c.closest('tr').querySelector('strong').textContent),
        })"""
    )
    return replaced


async def test_the_dashboard_pages_a_fleet_of_10000(
    fleet_server: LiveServer, browser: Browser
) -> None:
    server = fleet_server
    page = await browser.new_page(viewport={"width": 1280, "height": 900})
    frames: list[str] = []
    sockets: list[str] = []

    def on_socket(ws: WebSocket) -> None:
        sockets.append(ws.url)
        ws.on("framereceived", lambda payload: frames.append(str(payload)))

    page.on("websocket", on_socket)
    await page.goto(f"{server.url}/dashboard/")
    await page.fill("#token", ADMIN_TOKEN)
    began = await _now(page)
    await page.click("#login-form button")
    shown = await _until(page, f"({ROWS})() === 50 && {LIVE}")
    first_render = shown - began
    load_ms = await page.evaluate("() => window.chromaOrch.paging.timings.load")
    assert await page.locator("#instances tr strong").first.text_content() == "db-00000"
    await expect(page.locator("#page-info")).to_have_text("1–50")
    assert await page.locator("#page-next").is_enabled()
    assert "since=" in sockets[0]  # resumes from the page's seq: no snapshot of the fleet
    assert all(json.loads(f)["type"] != "snapshot" for f in frames)

    # A change on the page: its cells are patched, no other row or cell is touched.
    async with httpx.AsyncClient(base_url=server.url, headers=bearer(ADMIN_TOKEN)) as http:
        listed = (await http.get("/v1/instances", params={"search": "db-00002"})).json()
        on_page = listed["items"][0]["id"]
        listed = (await http.get("/v1/instances", params={"search": "db-05000"})).json()
        elsewhere = listed["items"][0]["id"]
        row = page.locator(f"tr[data-id='{on_page}']")
        await expect(row.locator("button[data-action=stop]")).to_be_enabled()
        await _mark_cells(page)
        began = await _now(page)
        assert (await http.post(f"/v1/instances/{on_page}/stop")).status_code == 202
        patched = await _until(
            page,
            f"document.querySelector(\"tr[data-id='{on_page}']\")"
            ".textContent.includes('→ stopped')",
        )
        update = patched - began
        patch_ms = await page.evaluate("() => window.chromaOrch.paging.timings.patch")
        await expect(row.locator("button[data-action=stop]")).to_be_disabled()
        replaced = await _replaced_cells(page)
        assert replaced["rows"] == 0
        assert replaced["cells"]
        assert set(replaced["cells"]) == {"db-00002"}

        # A change elsewhere: a button, not a re-render.
        await _mark_cells(page)
        assert (await http.post(f"/v1/instances/{elsewhere}/stop")).status_code == 202
        await expect(page.locator("#elsewhere")).to_have_text("1 changed elsewhere — refresh")
        assert await _replaced_cells(page) == {"rows": 0, "cells": []}
        await page.click("#elsewhere")
        await expect(page.locator("#elsewhere")).to_be_hidden()

    # Search (debounced), the phase filter, next and previous: each a page from the server.
    await page.fill("#search", "db-0999")
    await expect(page.locator("#instances tr")).to_have_count(10)
    await expect(page.locator("#instances tr strong").first).to_have_text("db-09990")
    await page.fill("#search", "fleet-00")  # tenants fleet-000 .. fleet-009: 1,000 instances
    await page.select_option("#phase-filter", "failed")  # every fifth: 200
    await expect(page.locator("#page-info")).to_have_text("1–50")
    assert set(
        await page.locator("#instances tr").evaluate_all(
            "(rows) => rows.map((r) => r.dataset.phase)"
        )
    ) == {"failed"}
    await page.click("#page-next")
    await expect(page.locator("#page-info")).to_have_text("51–100")
    await page.click("#page-prev")
    await expect(page.locator("#page-info")).to_have_text("1–50")
    await page.fill("#search", "nothing-like-it")
    await expect(page.locator("#empty")).to_have_text("No instances match.")

    print(  # noqa: T201 (the report's figures)
        f"\nfleet={FLEET} first_render_ms={first_render:.0f} (page load {load_ms:.0f}) "
        f"update_ms={update:.0f} (row patch {patch_ms:.1f})"
    )
    assert first_render < BOUND_MS
    assert update < BOUND_MS


async def test_the_plain_snapshot_of_10000_is_what_the_dashboard_avoids(
    fleet_server: LiveServer,
) -> None:
    """Measured for the report: a socket without ``since`` gets every instance first."""
    began = time.perf_counter()
    async with connect(
        f"{fleet_server.ws_url}/v1/events",
        additional_headers=bearer(ADMIN_TOKEN),
        max_size=None,
    ) as ws:
        first = await ws.recv()
    seconds = time.perf_counter() - began
    message = json.loads(first)
    assert message["type"] == "snapshot"
    assert len(message["instances"]) == FLEET
    print(f"\nsnapshot of {FLEET}: {len(first) / 1e6:.1f} MB in {seconds:.2f} s")  # noqa: T201
    async with httpx.AsyncClient(base_url=fleet_server.url, headers=bearer(ADMIN_TOKEN)) as http:
        page = await http.get("/v1/instances")
    assert len(page.content) * 50 < len(first)
