"""Restores that cannot be carried out, through the real service: a hostile or
damaged archive planted as a ready snapshot's, and a disk that fills up while the
archive is unpacked. Each fails the restore with a reason naming it, and the
instance keeps its data (checked with a real ``chromadb`` client after a start)."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tarfile
import uuid
from pathlib import Path

import pytest
from sqlalchemy import text

from chroma_orch.db.session import create_engine
from tests.e2e.service import Service, kill_chroma_processes, running_instance
from tests.e2e.snapshot_faults import (
    add,
    contents,
    request_snapshot,
    restore,
    restore_failed,
    settled,
    start_again,
    store_path,
)
from tests.snapshots.helpers import build_archive, file_member, special_member


async def _set_checksum(database_url: str, snapshot_id: str, archive: bytes) -> None:
    """The row names the planted archive's checksum: only the archive's content is bad."""
    engine = create_engine(database_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(
                text("UPDATE snapshots SET checksum = :sum, size_bytes = :size WHERE id = :id"),
                {
                    "sum": hashlib.sha256(archive).hexdigest(),
                    "size": len(archive),
                    "id": uuid.UUID(snapshot_id),
                },
            )
    finally:
        await engine.dispose()


def _flipped(archive: bytes) -> bytes:
    middle = len(archive) // 2
    return (
        archive[:middle]
        + bytes(b ^ 0xFF for b in archive[middle : middle + 64])
        + archive[middle + 64 :]
    )


HOSTILE = {
    "traversal": build_archive([file_member("../escaped", b"outside")]),
    "symlink": build_archive([special_member("chroma.sqlite3", tarfile.SYMTYPE, "/etc/passwd")]),
}


@pytest.mark.parametrize(
    ("planted", "reason"),
    [
        ("traversal", "UnsafeArchive"),
        ("symlink", "UnsafeArchive"),
        ("corrupted", "CorruptArchive"),
        ("missing", "ArchiveMissing"),
    ],
)
async def test_a_bad_archive_fails_the_restore_and_keeps_the_data(
    service: Service, database_url: str, planted: str, reason: str
) -> None:
    token, instance_id = await running_instance(service)
    await add(service, instance_id, token, ["a", "b"])
    async with service.client(token) as http:
        snapshot = await settled(http, await request_snapshot(http, instance_id))
        assert snapshot["phase"] == "ready", snapshot
        archive = store_path(service, snapshot)
        if planted == "corrupted":  # the row keeps the checksum of the good archive
            archive.write_bytes(_flipped(archive.read_bytes()))
        elif planted == "missing":
            archive.unlink()
        else:
            archive.write_bytes(HOSTILE[planted])
            await _set_checksum(database_url, snapshot["id"], HOSTILE[planted])
        await add(service, instance_id, token, ["c"])

        await restore(http, instance_id, snapshot["id"])
        failed = await restore_failed(http, instance_id)
        assert failed["failure"]["reason"] == reason, failed
        assert "kept its data" in failed["failure"]["message"]
        instances = service.data_dir / "instances"
        swapping = [p.name for p in instances.iterdir() if p.suffix in (".incoming", ".previous")]
        assert swapping == []
        assert not (instances / "escaped").exists()
        await start_again(http, instance_id)
    assert await contents(service, instance_id, token) == ({"a", "b", "c"}, "b")


def _random_archive(size: int) -> bytes:
    """A well-formed archive whose data does not compress (it fills a disk)."""
    return build_archive([file_member("filler.bin", os.urandom(size))])


def _can_mount_in_namespace() -> bool:
    """Whether ``unshare -m`` can mount a tmpfs: the service then runs in a mount
    namespace of its own, as root (so it still runs its servers as their own user)."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    probe = ["unshare", "-m", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"]
    return subprocess.run(probe, capture_output=True, check=False).returncode == 0


TMPFS = "8m"
FILLER = 16 * 1024 * 1024


@pytest.mark.skipif(not _can_mount_in_namespace(), reason="needs root and unshare -m")
async def test_disk_full_on_restore_fails_it_and_keeps_the_data(
    database_url: str, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    service = Service(database_url, data_dir)
    mount = 'mkdir -p "$0/instances" && mount -t tmpfs -o size={} tmpfs "$0/instances"'
    service.wrapper = ["unshare", "-m", "sh", "-c", f'{mount.format(TMPFS)} && exec "$@"']
    service.wrapper += [str(data_dir)]
    data_dir.mkdir()
    await service.start()
    try:
        token, instance_id = await running_instance(service)
        await add(service, instance_id, token, ["a", "b"])
        async with service.client(token) as http:
            snapshot = await settled(http, await request_snapshot(http, instance_id))
            assert snapshot["phase"] == "ready", snapshot
            big = _random_archive(FILLER)  # more than the instances' file system holds
            store_path(service, snapshot).write_bytes(big)
            await _set_checksum(database_url, snapshot["id"], big)
            await add(service, instance_id, token, ["c"])

            await restore(http, instance_id, snapshot["id"])
            failed = await restore_failed(http, instance_id)
            assert failed["failure"]["reason"] == "NoSpace", failed
            await start_again(http, instance_id)
        assert await contents(service, instance_id, token) == ({"a", "b", "c"}, "b")
    finally:
        await service.stop()
        kill_chroma_processes(data_dir)
