"""Writing an archive, in a worker thread: tar (PAX) of the manifest and the persist
directory, compressed by zstd on several threads, emitted in chunks."""

from __future__ import annotations

import hashlib
import io
import os
import stat
import tarfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, cast

import zstandard

from chroma_orch.snapshots._threads import Emit
from chroma_orch.snapshots.errors import ArchiveError, UnsafeArchiveError
from chroma_orch.snapshots.manifest import MANIFEST_NAME, Manifest

CHUNK = 1024 * 1024
# Measured on 150 MB of float32 (the shape of HNSW and SQLite data) against
# `tar -cf - DIR | zstd -T0 -3`: see README of the package (__init__.py).
LEVEL = 3
THREADS = -1  # zstd workers: one per logical CPU


@dataclass(frozen=True)
class Entry:
    name: str  # relative, POSIX
    path: Path
    is_dir: bool
    size: int
    mtime: float


def scan(source: Path) -> list[Entry]:
    """The directories and regular files under ``source``, sorted; anything else (a
    symbolic link, a device, a socket) is refused: an archive holds only plain data."""
    entries: list[Entry] = []
    for top, dirs, files in os.walk(source):
        dirs.sort()
        for name in [*dirs, *sorted(files)]:
            path = Path(top, name)
            info = path.lstat()
            if not (stat.S_ISDIR(info.st_mode) or stat.S_ISREG(info.st_mode)):
                raise UnsafeArchiveError(f"{path} is neither a directory nor a regular file")
            relative = path.relative_to(source).as_posix()
            is_dir = stat.S_ISDIR(info.st_mode)
            entries.append(
                Entry(relative, path, is_dir, 0 if is_dir else info.st_size, info.st_mtime)
            )
    return entries


def fill_counts(manifest: Manifest, entries: list[Entry]) -> Manifest:
    files = [e for e in entries if not e.is_dir]
    return replace(manifest, file_count=len(files), total_bytes=sum(e.size for e in files))


class HashingWriter(io.RawIOBase):
    """Where zstd writes: counts and (``hashing``) hashes the compressed bytes, then
    emits them. Not hashing when the consumer hashes them anyway (a store's ``put``):
    SHA-256 of every byte twice costs as much CPU time as the tar itself."""

    def __init__(self, emit: Emit, hashing: bool = True) -> None:
        self._emit = emit
        self.size = 0
        self.digest = hashlib.sha256()
        self._hashing = hashing

    def writable(self) -> bool:
        return True

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        chunk = bytes(data)
        if self._hashing:
            self.digest.update(chunk)
        self.size += len(chunk)
        self._emit(chunk)
        return len(chunk)


def _tar_info(name: str, *, is_dir: bool, size: int, mtime: float) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE if is_dir else tarfile.REGTYPE
    info.mode = 0o755 if is_dir else 0o644
    info.size = size
    info.mtime = int(mtime)
    return info


def write_archive(
    manifest: Manifest, entries: list[Entry], writer: HashingWriter, level: int, threads: int
) -> None:
    """The whole archive into ``writer``; blocking, for a worker thread."""
    compressor = zstandard.ZstdCompressor(level=level, threads=threads, write_checksum=True)
    with (
        compressor.stream_writer(
            cast(IO[bytes], writer), write_size=CHUNK, closefd=False
        ) as compressed,
        tarfile.TarFile(
            fileobj=cast(IO[bytes], compressed),
            mode="w",
            format=tarfile.PAX_FORMAT,
            copybufsize=CHUNK,
        ) as tar,
    ):
        raw = manifest.to_json()
        info = _tar_info(
            MANIFEST_NAME, is_dir=False, size=len(raw), mtime=manifest.created_at.timestamp()
        )
        tar.addfile(info, io.BytesIO(raw))
        for entry in entries:
            info = _tar_info(entry.name, is_dir=entry.is_dir, size=entry.size, mtime=entry.mtime)
            if entry.is_dir:
                tar.addfile(info)
                continue
            with entry.path.open("rb") as file:
                try:
                    tar.addfile(info, file)
                except OSError as error:
                    if "unexpected end of data" not in str(error):
                        raise
                    raise ArchiveError(
                        "SourceChanged", f"{entry.path} shrank while it was archived"
                    ) from None
