"""``kill -9`` of the service in the middle of a snapshot and of a restore, at moments
made observable on disk (``snapshot-work/<id>.partial`` while the quiesced server's
data is copied, ``snapshot-work/<id>`` once it is copied,
``<id>.<try>.tar.zst.<random>.part`` in the store while the archive is written,
``instances/<id>.incoming`` while an archive is unpacked). A new service resumes:
the snapshot ends ready (and restores) or failed with a reason, the restore
completes, and the instance runs with its old or its new data, never a mix
(checked with a real ``chromadb`` client)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.chaos.kills import pad, restarted
from tests.e2e.service import Service, running_instance
from tests.e2e.snapshot_faults import (
    add,
    contents,
    request_snapshot,
    restore,
    settled,
    start_again,
    store_path,
)
from tests.helpers import wait_for, wait_phase


def _found(directory: Path, pattern: str) -> bool:
    try:
        return directory.exists() and any(directory.rglob(pattern))
    except FileNotFoundError:  # a directory renamed or removed while it was walked
        return False  # (``.partial`` becoming the finished copy): look again


async def _appears(directory: Path, pattern: str) -> None:
    async def probe() -> bool:
        return _found(directory, pattern)  # a few stat calls: polled fast, inline

    await wait_for(probe, timeout=60, interval=0.002)


MOMENTS = {  # where to look, for what
    "copying": ("snapshot-work", "{snapshot}.partial"),  # the quiesced server's data
    "copied": ("snapshot-work", "{snapshot}"),  # the copy complete, the server restarting
    "storing": ("snapshots", "{snapshot}.*.tar.zst.*.part"),  # the archive being written
}


def _leftovers(data_dir: Path) -> list[str]:
    """Copies, partial archives and swap directories a finished operation left."""
    work = data_dir / "snapshot-work"
    found = [p.name for p in work.iterdir()] if work.exists() else []
    found += [p.name for p in (data_dir / "snapshots").rglob("*.part")]
    swaps = (".incoming", ".previous")
    found += [p.name for p in (data_dir / "instances").iterdir() if p.suffix in swaps]
    return found


@pytest.mark.parametrize("moment", sorted(MOMENTS))
async def test_kill_9_mid_snapshot_resumes(database_url: str, data_dir: Path, moment: str) -> None:
    first = Service(database_url, data_dir)
    await first.start()
    second: Service | None = None
    try:
        token, instance_id = await running_instance(first)
        await add(first, instance_id, token, ["a", "b"])
        pad(data_dir, instance_id)
        async with first.client(token) as http:
            snapshot_id = await request_snapshot(http, instance_id)
        where, pattern = MOMENTS[moment]
        await _appears(data_dir / where, pattern.format(snapshot=snapshot_id))
        second = await restarted(first)
        async with second.client(token) as http:
            snapshot = await settled(http, snapshot_id)
            assert snapshot["phase"] == "ready", snapshot  # redone from scratch
            await wait_phase(http, instance_id, "running", timeout=90)
            assert await contents(second, instance_id, token) == ({"a", "b"}, "b")
            await add(second, instance_id, token, ["c"])
            await restore(http, instance_id, snapshot_id)  # what it captured is whole
            await wait_phase(http, instance_id, "running", timeout=120)
        assert await contents(second, instance_id, token) == ({"a", "b"}, "b")
        assert _leftovers(data_dir) == []
    finally:
        await first.stop()
        if second is not None:
            await second.stop()


def _as_if_killed_between_the_renames(data_dir: Path, instance_id: str) -> None:
    """The state a kill between the swap's two renames leaves: the old data moved to
    ``<id>.previous``, no ``<id>`` (the server is stopped for the restore)."""
    data = data_dir / "instances" / instance_id
    data.rename(data.with_name(f"{instance_id}.previous"))


@pytest.mark.parametrize(
    ("moment", "archive_gone"),
    [("unpacking", False), ("between_renames", False), ("between_renames", True)],
)
async def test_kill_9_mid_restore_resumes(
    database_url: str, data_dir: Path, moment: str, archive_gone: bool
) -> None:
    """Resumed, the restore completes (the snapshot's data); when it cannot any more
    (its archive gone), it fails and the instance starts with its old data."""
    first = Service(database_url, data_dir)
    await first.start()
    second: Service | None = None
    try:
        token, instance_id = await running_instance(first)
        await add(first, instance_id, token, ["a", "b"])
        pad(data_dir, instance_id)
        async with first.client(token) as http:
            snapshot = await settled(http, await request_snapshot(http, instance_id))
            assert snapshot["phase"] == "ready", snapshot
            await wait_phase(http, instance_id, "running")
            await add(first, instance_id, token, ["c"])
            await restore(http, instance_id, snapshot["id"])
        await _appears(data_dir / "instances", f"{instance_id}.incoming")
        await first.kill9()
        if moment == "between_renames":
            _as_if_killed_between_the_renames(data_dir, instance_id)
        if archive_gone:
            store_path(first, snapshot).unlink()
        second = await restarted(first)
        async with second.client(token) as http:
            if archive_gone:
                failed = await wait_phase(http, instance_id, "failed", timeout=120)
                assert failed["failure"]["reason"] == "ArchiveMissing", failed
                await start_again(http, instance_id)
            else:
                await wait_phase(http, instance_id, "running", timeout=120)
        expected = {"a", "b", "c"} if archive_gone else {"a", "b"}
        assert await contents(second, instance_id, token) == (expected, "b")
        assert _leftovers(data_dir) == []
    finally:
        await first.stop()
        if second is not None:
            await second.stop()
