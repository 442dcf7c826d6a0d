"""DirectoryStore: atomic puts, streamed gets, idempotent deletes, safe keys; and a
real Chroma persist directory through pack, the store and unpack."""

from __future__ import annotations

import hashlib
import os
import sqlite3
from collections.abc import AsyncIterator
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from chroma_orch.snapshots.archive import (
    IncompatibleArchiveError,
    Manifest,
    check_compatible,
    chroma_version_of,
    pack,
    unpack,
)
from chroma_orch.snapshots.local_store import DirectoryStore
from chroma_orch.snapshots.store import (
    InvalidKeyError,
    StoreObjectMissingError,
    StoreUnavailableError,
)
from tests.snapshots.helpers import chunks_of

KEY = "tenant-1/instance-1/snap-1.tar.zst"


async def read_all(chunks: AsyncIterator[bytes]) -> bytes:
    return b"".join([chunk async for chunk in chunks])


async def test_put_get_delete(tmp_path: Path) -> None:
    store = DirectoryStore(tmp_path / "store")
    data = os.urandom(3 * 1024 * 1024 + 5)
    stored = await store.put(KEY, chunks_of(data))
    assert (stored.size, stored.sha256) == (len(data), hashlib.sha256(data).hexdigest())
    assert await store.exists(KEY)
    sizes = [len(chunk) async for chunk in store.get(KEY)]
    assert len(sizes) > 1
    assert max(sizes) <= 1024 * 1024
    assert await read_all(store.get(KEY)) == data
    await store.delete(KEY)
    assert not await store.exists(KEY)
    await store.delete(KEY)  # idempotent
    with pytest.raises(StoreObjectMissingError):
        await read_all(store.get(KEY))


async def test_a_failed_put_leaves_neither_object_nor_part_file(tmp_path: Path) -> None:
    store = DirectoryStore(tmp_path)
    await store.put(KEY, chunks_of(b"old archive"))

    async def failing() -> AsyncIterator[bytes]:
        yield b"partial"
        raise ConnectionError("packing failed")

    with pytest.raises(ConnectionError):
        await store.put(KEY, failing())
    assert await read_all(store.get(KEY)) == b"old archive"
    assert sorted(p.name for p in (tmp_path / "tenant-1" / "instance-1").iterdir()) == [
        "snap-1.tar.zst"
    ]


@pytest.mark.parametrize(
    "key",
    ["../escape", "/abs/key", "a//b", "a/./b", "a/../b", "", "a/b.part", "a\\b", "a/b\x00"],
)
async def test_keys_cannot_leave_the_root(tmp_path: Path, key: str) -> None:
    store = DirectoryStore(tmp_path / "store")
    with pytest.raises(InvalidKeyError):
        await store.put(key, chunks_of(b"x"))
    with pytest.raises(InvalidKeyError):
        await store.delete(key)
    assert not (tmp_path / "escape").exists()


def make_persist_dir(path: Path) -> None:
    import chromadb

    client = chromadb.PersistentClient(path=str(path))
    collection = client.create_collection("docs")
    collection.add(
        ids=[f"id-{i}" for i in range(200)],
        embeddings=np.array([[i, i % 7, 1.0] for i in range(200)], dtype=np.float32),
        metadatas=[{"n": i} for i in range(200)],
    )
    client.clear_system_cache()


def query_persist_dir(path: Path) -> tuple[int, list[str]]:
    import chromadb

    client = chromadb.PersistentClient(path=str(path))
    collection = client.get_collection("docs")
    result = collection.query(
        query_embeddings=np.array([[42.0, 0.0, 1.0]], dtype=np.float32), n_results=1
    )
    count = collection.count()
    client.clear_system_cache()
    return count, result["ids"][0]


async def test_a_real_chroma_directory_round_trips(tmp_path: Path) -> None:
    persist = tmp_path / "persist"
    make_persist_dir(persist)
    version = chroma_version_of(persist)
    assert version == "1"
    store = DirectoryStore(tmp_path / "store")
    manifest = Manifest("instance-1", version, datetime.now(UTC))
    info = await pack(persist, lambda chunks: store.put(KEY, chunks), manifest)
    restored = tmp_path / "restored"
    got = await unpack(store.get(KEY), restored, info.sha256)
    assert got.chroma_version == "1"
    assert got.file_count == info.manifest.file_count
    assert query_persist_dir(restored) == (200, ["id-42"])


def test_the_chroma_version_of_a_directory(tmp_path: Path) -> None:
    assert chroma_version_of(tmp_path) is None  # empty: Chroma has not written it
    (tmp_path / "chroma.sqlite3").write_bytes(b"not a database")
    assert chroma_version_of(tmp_path) is None


def test_another_major_version_is_refused() -> None:
    check_compatible("1", "1.5.9")
    check_compatible(None, "1.5.9")
    with pytest.raises(IncompatibleArchiveError, match=r"Chroma 0.*major 0.*1\.5\.9") as raised:
        check_compatible("0", "1.5.9")
    assert raised.value.reason == "IncompatibleArchive"


def test_an_older_schema_is_chroma_major_0(tmp_path: Path) -> None:
    with closing(sqlite3.connect(tmp_path / "chroma.sqlite3")) as connection:
        connection.execute("CREATE TABLE migrations (dir TEXT, version INTEGER, filename TEXT)")
        rows = [("sysdb", v, f"{v:05}.sqlite.sql") for v in range(1, 8)]
        connection.executemany("INSERT INTO migrations VALUES (?, ?, ?)", rows)
        connection.commit()
    assert chroma_version_of(tmp_path) == "0"


async def test_a_directory_that_cannot_be_written_is_store_unavailable(tmp_path: Path) -> None:
    blocker = tmp_path / "blocker"  # a file where a directory should be: even root fails
    blocker.write_text("")
    store = DirectoryStore(blocker / "store")
    with pytest.raises(StoreUnavailableError):
        await store.put("t/i/s.tar.zst", chunks_of(b"data"))


async def test_a_put_removes_the_part_file_a_crashed_put_of_its_key_left(tmp_path: Path) -> None:
    store = DirectoryStore(tmp_path)
    target = store.path_of("t/i/s.tar.zst")
    target.parent.mkdir(parents=True)
    crashed = target.with_name(f"{target.name}.0123456789ab.part")
    crashed.write_bytes(b"half an archive")
    other = target.with_name("other.tar.zst.0123456789ab.part")  # another key's: kept
    other.write_bytes(b"")
    await store.put("t/i/s.tar.zst", chunks_of(b"data"))
    assert sorted(p.name for p in target.parent.iterdir()) == [other.name, target.name]


async def test_a_delete_removes_the_object_and_the_part_files_of_its_puts(tmp_path: Path) -> None:
    """A key whose put was cut short (its replica died, or lost the lease) is deleted
    whole: each try of a capture stores under a key of its own, so no later put of the
    same key would discard them."""
    store = DirectoryStore(tmp_path)
    await store.put("t/i/s.1.tar.zst", chunks_of(b"data"))
    target = store.path_of("t/i/s.1.tar.zst")
    crashed = target.with_name(f"{target.name}.0123456789ab.part")
    crashed.write_bytes(b"half an archive")
    other = target.with_name("s.2.tar.zst.0123456789ab.part")  # another try's: kept
    other.write_bytes(b"")
    await store.delete("t/i/s.1.tar.zst")
    assert [p.name for p in target.parent.iterdir()] == [other.name]
    await store.delete("t/i/s.1.tar.zst")  # nothing there: nothing happens
