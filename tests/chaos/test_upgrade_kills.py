"""``kill -9`` of the service in the middle of a guarded upgrade, at each of its steps
(the pre_upgrade copy, the probe of the new server, the rollback, the rollback's
restore). A new service resumes it: the upgrade ends succeeded on the new version or
rolled back on the old one, never on a half-applied version, with one server per
instance and the data intact (checked with a real ``chromadb`` client)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import create_async_engine

from chroma_orch.db.models import InstanceUpgrade
from tests.chaos.kills import pad, restarted
from tests.chroma_versions import SECOND_VERSION
from tests.e2e.service import Service, running_instance
from tests.e2e.upgrade_helpers import (
    BLIND,
    MARK,
    MARKING,
    finished,
    read_data,
    served_version,
    upgrade,
    versions_env,
    write_data,
)
from tests.helpers import wait_for, wait_phase

Moment = Callable[[str, Path, str, str], Awaitable[None]]


def _phase_reached(phase: str) -> Moment:
    async def reached(database_url: str, data_dir: Path, instance_id: str, upgrade_id: str) -> None:
        engine = create_async_engine(database_url)
        query = select(InstanceUpgrade.phase).where(InstanceUpgrade.id == upgrade_id)
        try:
            async with engine.connect() as con:

                async def probe() -> bool:
                    found = await con.scalar(query)
                    await con.commit()
                    return found == phase

                await wait_for(probe, timeout=90, interval=0.002)
        finally:
            await engine.dispose()

    return reached


def _file_appears(where: str, pattern: str) -> Moment:
    async def appears(database_url: str, data_dir: Path, instance_id: str, upgrade_id: str) -> None:
        directory = data_dir / where
        name = pattern.format(instance=instance_id)

        async def probe() -> bool:
            return directory.exists() and any(directory.glob(name))

        await wait_for(probe, timeout=90, interval=0.002)

    return appears


MOMENTS: dict[str, tuple[str, Moment, str]] = {
    # name: (the version asked for, when to kill, how the upgrade must end)
    "copying": (SECOND_VERSION, _file_appears("snapshot-work", "*.partial"), "succeeded"),
    # the new version writes to the data, then fails its probe: the rollback restores
    # the pre_upgrade copy, which must hold none of that (before, the service that
    # resumed started the new version before it took the copy)
    "copying_rolled_back": (MARKING, _file_appears("snapshot-work", "*.partial"), "rolled_back"),
    "probing": (SECOND_VERSION, _phase_reached("probing"), "succeeded"),
    "rolling_back": (BLIND, _phase_reached("rolling_back"), "rolled_back"),
    "restoring": (BLIND, _file_appears("instances", "{instance}.incoming"), "rolled_back"),
}


@pytest.mark.parametrize("moment", sorted(MOMENTS))
async def test_kill_9_mid_upgrade_ends_on_one_version_with_the_data(
    database_url: str, data_dir: Path, tmp_path: Path, moment: str
) -> None:
    version, when, outcome = MOMENTS[moment]
    first = Service(database_url, data_dir, **versions_env(tmp_path / "tools"))
    await first.start()
    second: Service | None = None
    try:
        token, instance_id = await running_instance(first)
        base = f"{first.url}/i/{instance_id}"
        await asyncio.to_thread(write_data, base, token)
        before = await asyncio.to_thread(read_data, base, token)
        pad(data_dir, instance_id, 96 * 1024 * 1024)
        async with first.client(token) as http:
            asked = await upgrade(http, instance_id, version)
        await when(database_url, data_dir, instance_id, asked["id"])
        second = await restarted(first, "CHROMA_ORCH_LOCAL__CHROMA_VERSIONS")
        async with second.client(token) as http:
            done = await finished(http, instance_id, asked["id"], timeout=180)
            assert done["phase"] == outcome, done
            instance = await wait_phase(http, instance_id, "running", timeout=120)
        expected = SECOND_VERSION if outcome == "succeeded" else "installed"
        assert served_version(data_dir, instance_id) == expected  # and one server only
        base = f"{second.url}/i/{instance_id}"
        assert await asyncio.to_thread(read_data, base, token) == before
        if outcome == "rolled_back":
            assert instance["failure"]["reason"] == "UpgradeRolledBack", instance
        assert not (data_dir / "instances" / instance_id / MARK).exists()
    finally:
        await first.stop()
        if second is not None:
            await second.stop()
