"""The dashboard shows how far a starting instance got: the ECS runtime on moto,
with the AWS-behaviour layer holding the task in each start phase
(``tests/ecs/aws_lifecycle.py``), in Debian's chromium."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Browser, expect

from chroma_orch import dashboard
from chroma_orch.app import create_app
from chroma_orch.settings import EcsSettings
from tests.conftest import ADMIN_TOKEN, make_settings
from tests.dashboard.test_dashboard_browser import browser  # noqa: F401 (a fixture)
from tests.ecs.aws_behaviour import AwsBehaviour
from tests.ecs.aws_lifecycle import TaskLifecycle
from tests.ecs.conftest import (  # noqa: F401 (fixtures)
    _aws_credentials,
    _aws_proxy,
    aws,
    ecs_settings,
    moto_url,
    reconciler_settings,
)
from tests.events.live import LiveServer
from tests.helpers import bearer, create_tenant, wait_phase


@pytest.fixture
async def server(
    database_url: str,
    tmp_path: Path,
    ecs_settings: EcsSettings,  # noqa: F811 (the imported fixture)
) -> AsyncIterator[LiveServer]:
    settings = make_settings(
        database_url,
        tmp_path / "data",
        runtime="ecs",
        ecs=ecs_settings,
        reconciler=reconciler_settings(),
    )
    app = create_app(settings)
    dashboard.mount(app)
    async with LiveServer(app) as live:
        yield live


async def test_a_starting_instance_shows_its_start_phase(
    server: LiveServer,
    browser: Browser,  # noqa: F811 (the imported fixture)
    aws: AwsBehaviour,  # noqa: F811
) -> None:
    lifecycle = aws.lifecycle = TaskLifecycle()
    async with httpx.AsyncClient(base_url=server.url, headers=bearer(ADMIN_TOKEN)) as http:
        _, token = await create_tenant(http, "acme")
    page = await browser.new_page(viewport={"width": 1280, "height": 800})
    await page.goto(f"{server.url}/dashboard/")
    await page.fill("#token", token)
    await page.click("#login-form button")
    await expect(page.locator("#link")).to_have_text("live")

    await page.fill("#name", "web")
    await page.click("#launch-form button")
    row = page.locator("tr", has=page.locator("strong", has_text="web"))
    shown = row.locator("[data-start-phase]")
    await expect(row).to_have_attribute("data-phase", "starting", timeout=30_000)
    await expect(shown).to_have_attribute("data-start-phase", "provisioning", timeout=30_000)
    for stage, phase in (("PENDING", "pending"), ("PULLING", "pulling")):
        lifecycle.advance(stage)
        await expect(shown).to_have_attribute("data-start-phase", phase, timeout=30_000)
        await expect(shown).to_contain_text(phase)
    await expect(row).to_have_attribute("data-phase", "starting")

    lifecycle.advance("RUNNING")
    instance_id = await row.get_attribute("data-id")
    assert instance_id is not None
    async with httpx.AsyncClient(base_url=server.url, headers=bearer(token)) as http:
        await wait_phase(http, instance_id, "running")
    await expect(row).to_have_attribute("data-phase", "running", timeout=30_000)
    await expect(shown).to_have_count(0)  # shown only while starting
