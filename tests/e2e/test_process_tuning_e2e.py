"""Every way of running the service gets the same process-wide set-up: the tuning
(chroma_orch.process_tuning), seen from outside in /metrics, and the logging."""

from __future__ import annotations

import gc
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from chroma_orch.app import create_app
from chroma_orch.settings import Settings
from tests.e2e.service import SERVE, Service


def _uvicorn(port: int) -> list[str]:
    return ["-m", "uvicorn", "--factory", "chroma_orch.app:create_app", "--port", str(port)]


@pytest.mark.parametrize("entry_point", ["chroma-orch serve", "uvicorn directly"])
async def test_every_entry_point_applies_the_process_tuning(
    entry_point: str, database_url: str, tmp_path: Path
) -> None:
    service = Service(database_url, tmp_path / "data", CHROMA_ORCH_RECONCILER__ENABLED="false")
    service.command = SERVE if entry_point == "chroma-orch serve" else _uvicorn(service.port)
    await service.start()
    try:
        async with service.client() as admin:
            scraped = await admin.get("/metrics")
    finally:
        await service.stop()
    assert scraped.status_code == 200
    values = {
        sample.name: sample.value
        for family in text_string_to_metric_families(scraped.text)
        for sample in family.samples
    }
    assert values["chroma_orch_python_gc_frozen_objects"] > 0
    # Logging is set up too (secret masking, the service's format), whoever started it.
    assert " INFO chroma_orch.app service ready " in service.log_path.read_text()


async def test_the_tuning_lasts_as_long_as_the_lifespan(api_settings: Settings) -> None:
    app = create_app(api_settings)
    async with app.router.lifespan_context(app):
        assert gc.get_freeze_count() > 0
    assert gc.get_freeze_count() == 0
