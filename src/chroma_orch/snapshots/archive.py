"""The snapshot archive format: a zstd-compressed tar stream whose first member is
``chroma-orch-snapshot.json`` (``Manifest``), followed by the persist directory's
directories and regular files, relative to it.

Streaming shape (the ``Sink``): ``pack_stream(source, manifest)`` is an
``AsyncIterator[bytes]`` of compressed chunks (about 1 MiB each, at most a few in
memory), so a store takes it as it is::

    stored = await store.put(key, pack_stream(copy_dir, manifest))   # StoredObject(size, sha256)

``pack(source, sink, manifest)`` does the same for any ``Sink`` — an async callable
that consumes the chunk iterator to its end — and returns ``ArchiveInfo`` with the
size and SHA-256 of the compressed bytes, computed on the way, and the manifest
written::

    info = await pack(copy_dir, lambda chunks: store.put(key, chunks), manifest)

``unpack(chunks, into, expected_sha256)`` reads such a stream (``store.get(key)``)
into a new directory; ``verify(chunks, expected_sha256)`` only checks it. The tar
writing and reading and the zstd work run in worker threads (zstd itself on all
CPUs); the event loop only passes chunks along.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import BinaryIO

from chroma_orch.snapshots import _pack
from chroma_orch.snapshots._extract import extract
from chroma_orch.snapshots._readahead import ReadAhead, consume_in_thread
from chroma_orch.snapshots._threads import Emit, feed_thread, stream_from_thread
from chroma_orch.snapshots.errors import (
    ArchiveError,
    ArchiveSpaceError,
    CorruptArchiveError,
    IncompatibleArchiveError,
    NotAnArchiveError,
    UnsafeArchiveError,
)
from chroma_orch.snapshots.manifest import (
    FORMAT_VERSION,
    MANIFEST_NAME,
    Manifest,
    check_compatible,
    chroma_version_of,
)

__all__ = [
    "FORMAT_VERSION",
    "MANIFEST_NAME",
    "ArchiveError",
    "ArchiveInfo",
    "ArchiveSpaceError",
    "CorruptArchiveError",
    "IncompatibleArchiveError",
    "Manifest",
    "NotAnArchiveError",
    "Sink",
    "UnsafeArchiveError",
    "check_compatible",
    "chroma_version_of",
    "pack",
    "pack_stream",
    "unpack",
    "unpack_file",
    "verify",
]

Sink = Callable[[AsyncIterator[bytes]], Awaitable[object]]
"""Consumes an archive's chunks to their end (e.g. ``lambda c: store.put(key, c)``)."""


@dataclass(frozen=True)
class ArchiveInfo:
    """What ``pack`` wrote: ``size`` and ``sha256`` (hex) of the compressed bytes, and
    the manifest with its counts filled in."""

    size: int
    sha256: str
    manifest: Manifest


async def pack_stream(
    source: Path,
    manifest: Manifest,
    *,
    level: int = _pack.LEVEL,
    threads: int = _pack.THREADS,
    on_done: Callable[[ArchiveInfo], None] | None = None,
) -> AsyncGenerator[bytes, None]:
    """The archive of ``source`` (a quiesced copy of a persist directory) as chunks of
    compressed bytes; ``manifest``'s counts are filled in from ``source``. Refuses
    (``UnsafeArchiveError``) a directory holding anything but directories and regular
    files. ``on_done`` gets the ``ArchiveInfo`` once the last chunk was yielded (the
    SHA-256 is computed only for it: a store hashes what it receives anyway)."""
    entries = await asyncio.to_thread(_pack.scan, source)
    manifest = _pack.fill_counts(manifest, entries)
    writers: list[_pack.HashingWriter] = []

    def produce(emit: Emit) -> None:
        writers.append(_pack.HashingWriter(emit, hashing=on_done is not None))
        _pack.write_archive(manifest, entries, writers[0], level, threads)

    async for chunk in stream_from_thread(produce):
        yield chunk
    if on_done is not None:
        digest = writers[0]
        on_done(ArchiveInfo(digest.size, digest.digest.hexdigest(), manifest))


async def pack(source: Path, sink: Sink, manifest: Manifest) -> ArchiveInfo:
    """Pack ``source`` into ``sink`` (see the module's docstring); the size and
    checksum of what the sink received."""
    done: list[ArchiveInfo] = []
    await sink(pack_stream(source, manifest, on_done=done.append))
    if not done:
        raise ArchiveError("SinkStopped", "the sink stopped before the end of the archive")
    return done[0]


async def unpack(chunks: AsyncIterator[bytes], into: Path, expected_sha256: str | None) -> Manifest:
    """Extract the archive ``chunks`` carries into ``into``, which this creates (its
    parent must exist; ``FileExistsError`` when ``into`` does). On any failure —
    ``UnsafeArchiveError``, ``CorruptArchiveError`` (including a checksum other than
    ``expected_sha256``, checked at the end), ``NotAnArchiveError``,
    ``ArchiveSpaceError``, an error of ``chunks``, cancellation — ``into`` is removed
    with everything in it. Files get mode 0644, directories 0755."""
    extract_into = partial(extract, into=into, expected_sha256=expected_sha256)
    return await _filling(into, lambda: feed_thread(chunks, extract_into))


async def unpack_file(file: BinaryIO, into: Path, expected_sha256: str | None) -> Manifest:
    """``unpack`` of an archive in a local file (``LocalFiles.open_file``), read and
    checked in worker threads only (the event loop passes no chunk along); the same
    checks and errors (an error reading ``file`` is ``StoreUnavailableError``).
    Closes ``file``."""
    extract_into = partial(extract, into=into, expected_sha256=expected_sha256)
    reader = ReadAhead(file)
    try:
        return await _filling(into, lambda: consume_in_thread(reader, extract_into))
    finally:
        reader.close()  # (closes ``file`` here if its thread never started)


async def _filling(into: Path, fill: Callable[[], Awaitable[Manifest]]) -> Manifest:
    """``fill()`` into the new directory ``into``, removed on any failure."""
    await asyncio.to_thread(into.mkdir)
    try:
        return await fill()
    except BaseException:
        await asyncio.shield(asyncio.to_thread(shutil.rmtree, into, ignore_errors=True))
        raise


async def verify(chunks: AsyncIterator[bytes], expected_sha256: str | None) -> Manifest:
    """Read the archive ``chunks`` carries to its end with every check ``unpack`` makes
    (the same errors), writing nothing; its manifest. An upload is checked so before
    anything refers to it."""
    return await feed_thread(chunks, partial(extract, into=None, expected_sha256=expected_sha256))
