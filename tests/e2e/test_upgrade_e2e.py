"""Guarded upgrades end to end: the real service, real Chroma servers of two versions
(chromadb 1.5.9 installed, 1.5.8 in its own venv), real data written and read through
the data plane with chromadb; and versions that break as real ones can (a server that
cannot see its data, one that does not start), which must roll back with the data
intact."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import create_async_engine

from chroma_orch.db.models import Event
from tests.chroma_versions import SECOND_VERSION
from tests.e2e.service import Service, running_instance, running_service
from tests.e2e.upgrade_helpers import (
    BLIND,
    DEAD,
    finished,
    read_data,
    served_version,
    upgrade,
    versions_env,
    write_data,
)
from tests.helpers import wait_phase

INSTALLED = "1.5.9"


@pytest.fixture
def service(upgrade_service: Service) -> Service:
    """The service knows Chroma 1.5.8 and two broken versions (tests/e2e/conftest.py)."""
    return upgrade_service


async def _upgrade_events(database_url: str, upgrade_id: str) -> list[str]:
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as con:
            rows = (
                await con.execute(
                    select(Event.after)
                    .where(Event.type == "upgrade.phase_changed")
                    .order_by(Event.seq)
                )
            ).scalars()
            return [after["phase"] for after in rows if after["id"] == upgrade_id]
    finally:
        await engine.dispose()


async def test_an_upgrade_keeps_the_data_and_runs_the_new_version(
    service: Service, database_url: str
) -> None:
    token, instance_id = await running_instance(service)
    base = f"{service.url}/i/{instance_id}"
    await asyncio.to_thread(write_data, base, token)
    before = await asyncio.to_thread(read_data, base, token)
    assert served_version(service.data_dir, instance_id) == "installed"
    async with service.client(token) as http:
        asked = await upgrade(http, instance_id, SECOND_VERSION)
        assert (asked["from_version"], asked["to_version"]) == (INSTALLED, SECOND_VERSION)
        done = await finished(http, instance_id, asked["id"])
        assert done["phase"] == "succeeded", done
        assert done["failure"] is None
        assert done["started_at"] is not None
        assert done["switched_at"] is not None
        instance = await wait_phase(http, instance_id, "running")
        assert instance["failure"] is None
        assert instance["observed_generation"] == instance["generation"]
        snapshot = (await http.get(f"/v1/snapshots/{done['snapshot_id']}")).json()
        assert (snapshot["kind"], snapshot["phase"]) == ("pre_upgrade", "ready")
        listed = (await http.get(f"/v1/instances/{instance_id}/upgrades")).json()["items"]
        assert [u["id"] for u in listed] == [asked["id"]]
    assert served_version(service.data_dir, instance_id) == SECOND_VERSION
    assert await asyncio.to_thread(read_data, base, token) == before
    assert await _upgrade_events(database_url, asked["id"]) == [
        "upgrading",
        "probing",
        "succeeded",
    ]
    async with service.client(token) as http:  # and back: both directions work
        again = await upgrade(http, instance_id, INSTALLED)
        assert (await finished(http, instance_id, again["id"]))["phase"] == "succeeded"
    assert served_version(service.data_dir, instance_id) == "installed"
    assert await asyncio.to_thread(read_data, base, token) == before


async def _rolled_back(
    service: Service, version: str, reason: str
) -> tuple[dict[str, Any], dict[str, Any], str, str]:
    token, instance_id = await running_instance(service)
    base = f"{service.url}/i/{instance_id}"
    await asyncio.to_thread(write_data, base, token)
    before = await asyncio.to_thread(read_data, base, token)
    async with service.client(token) as http:
        asked = await upgrade(http, instance_id, version)
        done = await finished(http, instance_id, asked["id"])
        assert done["phase"] == "rolled_back", done
        assert done["failure"]["reason"] == reason, done
        instance = await wait_phase(http, instance_id, "running")
    assert instance["failure"]["reason"] == "UpgradeRolledBack", instance
    assert version in instance["failure"]["message"]
    assert served_version(service.data_dir, instance_id) == "installed"
    assert await asyncio.to_thread(read_data, base, token) == before
    return done, instance, token, instance_id


async def test_a_version_that_cannot_see_the_data_is_rolled_back(service: Service) -> None:
    done, instance, token, instance_id = await _rolled_back(service, BLIND, "ParityMismatch")
    assert "collection default_database/docs is missing" in done["differences"]
    assert "collection default_database/docs is missing" in instance["failure"]["message"]
    async with service.client(token) as http:  # what the new server had is kept too
        listed = (await http.get(f"/v1/instances/{instance_id}/snapshots")).json()["items"]
    kinds = {(s["kind"], s["phase"]) for s in listed}
    assert {("pre_upgrade", "ready"), ("pre_restore", "ready")} <= kinds


async def test_a_version_that_does_not_start_is_rolled_back(service: Service) -> None:
    done, _, _, _ = await _rolled_back(service, DEAD, "ServerDidNotStart")
    assert "did not start" in done["failure"]["message"]


async def test_refused_upgrades_change_nothing(service: Service) -> None:
    token, instance_id = await running_instance(service)
    async with service.client(token) as http:
        unknown = await http.post(
            f"/v1/instances/{instance_id}/upgrade", json={"chroma_version": "9.9.9"}
        )
        assert unknown.status_code == 422, unknown.text
        assert unknown.json()["code"] == "invalid_spec"
        assert "9.9.9" in unknown.json()["detail"]
        same = await http.post(
            f"/v1/instances/{instance_id}/upgrade", json={"chroma_version": INSTALLED}
        )
        assert same.status_code == 409, same.text
        malformed = await http.post(
            f"/v1/instances/{instance_id}/upgrade", json={"chroma_version": "../x"}
        )
        assert malformed.status_code == 422
        missing = await http.post(
            f"/v1/instances/{uuid.uuid4()}/upgrade", json={"chroma_version": SECOND_VERSION}
        )
        assert missing.status_code == 404
        listed = (await http.get(f"/v1/instances/{instance_id}/upgrades")).json()["items"]
        assert listed == []
        generation = (await http.get(f"/v1/instances/{instance_id}")).json()["generation"]

        asked = await upgrade(http, instance_id, SECOND_VERSION)
        shown = (await http.get(f"/v1/instances/{instance_id}")).json()
        assert shown["upgrade_id"] in (asked["id"], None)  # (None: it ended already)
        stop = await http.post(f"/v1/instances/{instance_id}/stop")
        assert stop.status_code == 409, stop.text
        assert stop.json()["code"] == "upgrade_in_progress"
        second = await http.post(
            f"/v1/instances/{instance_id}/upgrade", json={"chroma_version": INSTALLED}
        )
        assert second.json()["code"] == "upgrade_in_progress"
        assert (await finished(http, instance_id, asked["id"]))["phase"] == "succeeded"
        after = (await http.get(f"/v1/instances/{instance_id}")).json()
        assert after["generation"] == generation + 1  # the upgrade's, and nothing else's
        assert after["upgrade_id"] is None

        assert (await http.post(f"/v1/instances/{instance_id}/stop")).status_code == 202
        await wait_phase(http, instance_id, "stopped")
        stopped = await http.post(
            f"/v1/instances/{instance_id}/upgrade", json={"chroma_version": INSTALLED}
        )
        assert stopped.status_code == 409
        assert stopped.json()["code"] == "invalid_transition"


async def test_a_delete_cancels_the_upgrade(service: Service, database_url: str) -> None:
    token, instance_id = await running_instance(service)
    async with service.client(token) as http:
        asked = await upgrade(http, instance_id, SECOND_VERSION)
        assert (await http.delete(f"/v1/instances/{instance_id}")).status_code == 202
        done = await finished(http, instance_id, asked["id"])
    assert done["phase"] in ("cancelled", "succeeded"), done  # a race the upgrade may win


async def test_an_upgrade_moves_on_without_waiting_for_a_resync(
    database_url: str, tmp_path: Path
) -> None:
    """Each step of an upgrade wakes the next at once: with full passes only every ten
    minutes, an upgrade still ends within the minute."""
    env = versions_env(tmp_path / "tools") | {"CHROMA_ORCH_RECONCILER__RESYNC_INTERVAL": "600"}
    async with running_service(database_url, tmp_path / "data", **env) as service:
        token, instance_id = await running_instance(service)
        async with service.client(token) as http:
            asked = await upgrade(http, instance_id, SECOND_VERSION)
            done = await finished(http, instance_id, asked["id"], timeout=60)
    assert done["phase"] == "succeeded", done
