"""The archive format: round trips, and every refusal leaves nothing behind."""

from __future__ import annotations

import asyncio
import gc
import hashlib
import os
import tarfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from chroma_orch.snapshots.archive import (
    ArchiveError,
    CorruptArchiveError,
    NotAnArchiveError,
    UnsafeArchiveError,
    pack,
    pack_stream,
    unpack,
)
from tests.snapshots.helpers import (
    Collect,
    build_archive,
    chunks_of,
    file_member,
    long_name_header,
    manifest,
    pax_named,
    special_member,
)


def fill(root: Path) -> None:
    (root / "seg" / "deep").mkdir(parents=True)
    (root / "empty-dir").mkdir()
    (root / "chroma.sqlite3").write_bytes(os.urandom(3 * 1024 * 1024 + 17))
    (root / "seg" / "data_level0.bin").write_bytes(b"\x00" * 2_000_000)
    (root / "seg" / "deep" / "empty.bin").write_bytes(b"")


def tree(root: Path) -> dict[str, bytes | None]:
    return {
        p.relative_to(root).as_posix(): (p.read_bytes() if p.is_file() else None)
        for p in sorted(root.rglob("*"))
    }


async def test_round_trip_keeps_every_file_and_directory(tmp_path: Path) -> None:
    source = tmp_path / "source"
    source.mkdir()
    fill(source)
    sink = Collect()
    info = await pack(source, sink, manifest())
    assert info.size == len(sink.data)
    assert info.sha256 == hashlib.sha256(sink.data).hexdigest()
    assert (info.manifest.file_count, info.manifest.total_bytes) == (
        3,
        3 * 1024 * 1024 + 17 + 2_000_000,
    )
    got = await unpack(chunks_of(sink.data), tmp_path / "out", info.sha256)
    assert got == info.manifest
    assert tree(tmp_path / "out") == tree(source)


async def test_pack_stream_is_chunked_and_stops_its_thread_when_closed(tmp_path: Path) -> None:
    (tmp_path / "big.bin").write_bytes(os.urandom(8 * 1024 * 1024))
    stream = pack_stream(tmp_path, manifest())
    first = await anext(stream)
    assert 0 < len(first) <= 2 * 1024 * 1024
    await stream.aclose()  # returns only once the producer thread has stopped


async def test_pack_refuses_a_symlink_in_the_source(tmp_path: Path) -> None:
    (tmp_path / "link").symlink_to("/etc/passwd")
    with pytest.raises(UnsafeArchiveError):
        await pack(tmp_path, Collect(), manifest())


HOSTILE: dict[str, list[tuple[tarfile.TarInfo, bytes | None]]] = {
    "absolute": [file_member("/tmp/evil", b"x")],
    "dotdot": [file_member("../evil", b"x")],
    "dotdot_inside": [file_member("a/../../evil", b"x")],
    "symlink": [special_member("link", tarfile.SYMTYPE, "/etc")],
    "hardlink": [special_member("hard", tarfile.LNKTYPE, "/etc/passwd")],
    "fifo": [special_member("fifo", tarfile.FIFOTYPE)],
    "device": [special_member("dev", tarfile.CHRTYPE)],
    "duplicate": [file_member("a", b"x"), file_member("a", b"y")],
    "second_manifest": [file_member("chroma-orch-snapshot.json", b"{}")],
    "file_then_under_it": [file_member("a", b"x"), file_member("a/b", b"y")],
    # a GNU sparse file (never written by ``pack``): extraction copies content as is
    "sparse": [special_member("holes", tarfile.GNUTYPE_SPARSE)],
    # names no file can have: before, ``verify`` let them through and the extraction
    # raised ValueError or OSError, which a restore retried forever
    "nul_in_name": [pax_named("a\x00b", b"x")],
    "long_component": [file_member("x" * 256, b"x")],
    "long_path": [file_member("/".join(["d" * 200] * 21), b"x")],
    # a long name declared 256 MiB long: tarfile read it whole before any check
    "huge_header": [long_name_header(1 << 28)],
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
async def test_unsafe_members_are_refused_and_nothing_is_left(tmp_path: Path, case: str) -> None:
    data = build_archive([file_member("ok.bin", b"fine"), *HOSTILE[case]])
    with pytest.raises(UnsafeArchiveError) as raised:
        await unpack(chunks_of(data), tmp_path / "out", None)
    assert raised.value.reason == "UnsafeArchive"
    assert not (tmp_path / "out").exists()


NOT_ARCHIVES = {
    "empty": b"",
    "text": b"hello, this is not an archive" * 100,
    "plain_tar_no_zstd": b"\x00" * 10240,
    "zstd_not_tar": __import__("zstandard").ZstdCompressor().compress(b"just text" * 1000),
    "no_manifest": build_archive([file_member("a", b"x")], with_manifest=False),
    "manifest_not_json": build_archive([], manifest_json=b"{nope"),
    "manifest_wrong_format": build_archive([], manifest_json=b'{"format_version": 99}'),
    "manifest_too_deep": build_archive([], manifest_json=b"[" * 50_000),  # was a 500
    "manifest_wrong_types": build_archive(
        [],
        manifest_json=b'{"format_version": 1, "instance_id": 5, "chroma_version": null,'
        b' "created_at": "2025-01-01T00:00:00+00:00", "file_count": 0, "total_bytes": 0}',
    ),
}


@pytest.mark.parametrize("case", sorted(NOT_ARCHIVES))
async def test_what_is_not_an_archive_is_refused(tmp_path: Path, case: str) -> None:
    with pytest.raises(NotAnArchiveError) as raised:
        await unpack(chunks_of(NOT_ARCHIVES[case]), tmp_path / "out", None)
    assert raised.value.reason == "NotAnArchive"
    assert not (tmp_path / "out").exists()


async def packed(tmp_path: Path) -> bytes:
    source = tmp_path / "source"
    source.mkdir()
    fill(source)
    sink = Collect()
    await pack(source, sink, manifest())
    return sink.data


async def test_a_checksum_mismatch_removes_what_was_extracted(tmp_path: Path) -> None:
    data = await packed(tmp_path)
    wrong = hashlib.sha256(data + b"x").hexdigest()
    with pytest.raises(CorruptArchiveError, match="SHA-256"):
        await unpack(chunks_of(data), tmp_path / "out", wrong)
    assert not (tmp_path / "out").exists()


async def test_bytes_after_the_archive_count_in_the_checksum(tmp_path: Path) -> None:
    data = await packed(tmp_path)
    with pytest.raises(CorruptArchiveError):
        await unpack(chunks_of(data + b"\x00"), tmp_path / "out", hashlib.sha256(data).hexdigest())
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("damage", ["flipped_byte", "truncated"])
async def test_damage_without_a_checksum_is_still_found(tmp_path: Path, damage: str) -> None:
    data = await packed(tmp_path)
    middle = len(data) // 2
    if damage == "flipped_byte":
        data = data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1 :]
    else:
        data = data[:middle]
    with pytest.raises(CorruptArchiveError):
        await unpack(chunks_of(data), tmp_path / "out", None)
    assert not (tmp_path / "out").exists()


async def test_a_failing_source_removes_what_was_extracted(tmp_path: Path) -> None:
    data = await packed(tmp_path)

    async def broken() -> object:
        async for chunk in chunks_of(data[: len(data) // 2]):
            yield chunk
        raise ConnectionError("store went away")

    with pytest.raises(ConnectionError):
        await unpack(broken(), tmp_path / "out", None)  # type: ignore[arg-type]
    assert not (tmp_path / "out").exists()


async def test_a_cancel_while_the_thread_stops_still_waits_for_it(tmp_path: Path) -> None:
    """The source fails, and the unpack is cancelled while its worker thread is still
    being told to stop (a restore's read cancelled once its pass gave up): the
    cancellation is raised only once the thread has ended, so no thread writes into
    the directory being removed, and no error of the thread is left unretrieved."""
    data = await packed(tmp_path)
    unretrieved: list[dict[str, object]] = []
    asyncio.get_running_loop().set_exception_handler(lambda _, context: unretrieved.append(context))

    async def broken() -> AsyncIterator[bytes]:
        async for chunk in chunks_of(data[: len(data) // 2]):
            yield chunk
        asyncio.get_running_loop().call_soon(unpacking.cancel)
        raise ConnectionError("store went away")

    unpacking = asyncio.ensure_future(unpack(broken(), tmp_path / "out", None))
    with pytest.raises(asyncio.CancelledError):
        await unpacking
    await asyncio.sleep(0.5)  # a thread left running would end by now (it polls at 0.1 s)
    gc.collect()
    assert not unretrieved, unretrieved
    assert not (tmp_path / "out").exists()


async def test_the_target_must_not_exist(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep").write_text("mine")
    with pytest.raises(FileExistsError):
        await unpack(chunks_of(await packed(tmp_path)), tmp_path / "out", None)
    assert (tmp_path / "out" / "keep").read_text() == "mine"


def test_every_refusal_is_an_archive_error_with_a_reason() -> None:
    for error in (UnsafeArchiveError("m"), CorruptArchiveError("m"), NotAnArchiveError("m")):
        assert isinstance(error, ArchiveError)
        assert error.message == "m"
        assert error.reason


@pytest.mark.parametrize("expected", [True, False])
async def test_damage_before_the_first_member_is_corrupt_not_foreign(
    tmp_path: Path, expected: bool
) -> None:
    """A small archive is one zstd block: damage anywhere breaks reading the manifest.
    It is still a damaged archive of ours (a zstd stream), not something else."""
    data = build_archive([file_member("chroma.sqlite3", os.urandom(2000))])
    middle = len(data) // 2
    damaged = (
        data[:middle] + bytes(b ^ 0xFF for b in data[middle : middle + 8]) + data[middle + 8 :]
    )
    checksum = hashlib.sha256(data).hexdigest() if expected else None
    with pytest.raises(CorruptArchiveError):
        await unpack(chunks_of(damaged), tmp_path / "out", checksum)
    assert not (tmp_path / "out").exists()
