"""``unpack_file``: an archive in a local file (``DirectoryStore``), read ahead in a
thread of its own, with every check and cleanup of ``unpack``."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import threading
from pathlib import Path
from typing import BinaryIO

import pytest

from chroma_orch.snapshots.archive import (
    CorruptArchiveError,
    NotAnArchiveError,
    UnsafeArchiveError,
    pack,
    unpack,
    unpack_file,
)
from chroma_orch.snapshots.local_store import DirectoryStore
from chroma_orch.snapshots.store import StoreObjectMissingError, StoreUnavailableError
from tests.helpers import wait_for
from tests.snapshots.helpers import Collect, build_archive, file_member, manifest
from tests.snapshots.test_archive import HOSTILE, NOT_ARCHIVES, tree

KEY = "t/i/s.tar.zst"


def awkward_sizes(root: Path) -> None:
    """Files across chunk and tar-block boundaries: empty, one block exactly, a block
    and a byte, several read buffers and an odd rest."""
    for size in (0, 1, 511, 512, 513, 1024 * 1024, 3 * 1024 * 1024 + 7):
        (root / "d" / f"{size}.bin").parent.mkdir(exist_ok=True)
        (root / "d" / f"{size}.bin").write_bytes(os.urandom(size))


async def stored(tmp_path: Path, data: bytes) -> tuple[DirectoryStore, BinaryIO]:
    store = DirectoryStore(tmp_path / "store")
    store.path_of(KEY).parent.mkdir(parents=True)
    store.path_of(KEY).write_bytes(data)
    return store, await store.open_file(KEY)


async def closed_soon(file: BinaryIO) -> None:
    """The read-ahead thread closes the file once its current read returns, without
    being waited for (``ReadAhead.close``): closed soon after, not at once."""

    async def closed() -> bool:
        return file.closed

    await wait_for(closed, timeout=10)


async def test_round_trip_matches_the_streamed_unpack(tmp_path: Path) -> None:
    source = tmp_path / "source"
    source.mkdir()
    awkward_sizes(source)
    sink = Collect()
    info = await pack(source, sink, manifest())
    store, file = await stored(tmp_path, sink.data)
    await unpack_file(file, tmp_path / "out", info.sha256)
    await unpack(store.get(KEY), tmp_path / "streamed", info.sha256)
    assert tree(tmp_path / "out") == tree(source) == tree(tmp_path / "streamed")
    await closed_soon(file)


@pytest.mark.parametrize("case", sorted(HOSTILE))
async def test_unsafe_members_are_refused_and_nothing_is_left(tmp_path: Path, case: str) -> None:
    _, file = await stored(
        tmp_path, build_archive([file_member("ok.bin", b"fine"), *HOSTILE[case]])
    )
    with pytest.raises(UnsafeArchiveError):
        await unpack_file(file, tmp_path / "out", None)
    assert not (tmp_path / "out").exists()
    await closed_soon(file)


@pytest.mark.parametrize("case", ["empty", "text", "zstd_not_tar", "no_manifest"])
async def test_what_is_not_an_archive_is_refused(tmp_path: Path, case: str) -> None:
    _, file = await stored(tmp_path, NOT_ARCHIVES[case])
    with pytest.raises(NotAnArchiveError):
        await unpack_file(file, tmp_path / "out", None)
    assert not (tmp_path / "out").exists()


async def test_a_checksum_mismatch_removes_what_was_extracted(tmp_path: Path) -> None:
    data = build_archive([file_member("a", os.urandom(3 * 1024 * 1024))])
    _, file = await stored(tmp_path, data)
    with pytest.raises(CorruptArchiveError, match="SHA-256"):
        await unpack_file(file, tmp_path / "out", hashlib.sha256(data + b"x").hexdigest())
    assert not (tmp_path / "out").exists()


async def test_a_truncated_file_is_corrupt(tmp_path: Path) -> None:
    data = build_archive([file_member("a", os.urandom(3 * 1024 * 1024))])
    _, file = await stored(tmp_path, data[: len(data) // 2])
    with pytest.raises(CorruptArchiveError):
        await unpack_file(file, tmp_path / "out", None)
    assert not (tmp_path / "out").exists()


async def test_a_missing_object_is_missing(tmp_path: Path) -> None:
    with pytest.raises(StoreObjectMissingError):
        await DirectoryStore(tmp_path).open_file(KEY)


class _Failing(io.BytesIO):
    """A file whose second read fails (a disk error)."""

    def read(self, size: int | None = -1) -> bytes:
        if self.tell():
            raise OSError(5, "Input/output error")
        return super().read(size)


async def test_a_read_error_is_store_unavailable_and_removes_what_was_extracted(
    tmp_path: Path,
) -> None:
    data = build_archive([file_member("a", os.urandom(3 * 1024 * 1024))])
    file = _Failing(data)
    with pytest.raises(StoreUnavailableError):
        await unpack_file(file, tmp_path / "out", None)
    assert not (tmp_path / "out").exists()
    await closed_soon(file)


class _Hanging(io.BytesIO):
    """A file whose second read hangs until ``release`` is set."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.release, self.hanging = threading.Event(), threading.Event()

    def read(self, size: int | None = -1) -> bytes:
        if self.tell():
            self.hanging.set()
            self.release.wait()
        return super().read(size)


async def test_cancelling_returns_while_a_read_hangs_and_removes_what_was_extracted(
    tmp_path: Path,
) -> None:
    file = _Hanging(build_archive([file_member("a", os.urandom(3 * 1024 * 1024))]))
    task = asyncio.create_task(unpack_file(file, tmp_path / "out", None))
    await asyncio.to_thread(file.hanging.wait, 30)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 30)  # the hanging read does not hold the cancel up
    assert not (tmp_path / "out").exists()
    file.release.set()
    await asyncio.to_thread(_closed_within, file, 30)


def _closed_within(file: io.BytesIO, seconds: float) -> None:
    """The reading thread closes the file once its read returns."""
    deadline = threading.Event()
    for _ in range(int(seconds * 20)):
        if file.closed:
            return
        deadline.wait(0.05)
    raise AssertionError("the file was not closed")
