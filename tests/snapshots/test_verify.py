"""``verify``: an archive checked without extracting it refuses what ``unpack`` refuses."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from chroma_orch.snapshots.archive import (
    CorruptArchiveError,
    NotAnArchiveError,
    UnsafeArchiveError,
    verify,
)
from tests.snapshots.helpers import build_archive, chunks_of, file_member
from tests.snapshots.test_archive import HOSTILE, NOT_ARCHIVES, packed


async def test_a_good_archive_gives_its_manifest(tmp_path: Path) -> None:
    data = await packed(tmp_path)
    manifest = await verify(chunks_of(data), hashlib.sha256(data).hexdigest())
    assert manifest.file_count == 3
    assert manifest.chroma_version == "1"


@pytest.mark.parametrize("case", sorted(HOSTILE))
async def test_unsafe_members_are_refused(case: str) -> None:
    data = build_archive([file_member("ok.bin", b"fine"), *HOSTILE[case]])
    with pytest.raises(UnsafeArchiveError):
        await verify(chunks_of(data), None)


async def test_directories_may_repeat_and_hold_files() -> None:
    import tarfile

    from tests.snapshots.helpers import special_member

    members = [
        special_member("d", tarfile.DIRTYPE),
        special_member("d", tarfile.DIRTYPE),
        file_member("d/f", b"x"),
    ]
    manifest = await verify(chunks_of(build_archive(members)), None)
    assert manifest.file_count == 1


@pytest.mark.parametrize("case", sorted(NOT_ARCHIVES))
async def test_what_is_not_an_archive_is_refused(case: str) -> None:
    with pytest.raises(NotAnArchiveError):
        await verify(chunks_of(NOT_ARCHIVES[case]), None)


@pytest.mark.parametrize("damage", ["flipped_byte", "truncated", "checksum"])
async def test_damage_is_found(tmp_path: Path, damage: str) -> None:
    data = await packed(tmp_path)
    expected = hashlib.sha256(data).hexdigest()
    middle = len(data) // 2
    if damage == "flipped_byte":
        data = data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1 :]
    elif damage == "truncated":
        data = data[:middle]
    else:
        expected = hashlib.sha256(b"other").hexdigest()
    with pytest.raises(CorruptArchiveError):
        await verify(chunks_of(data), expected)
