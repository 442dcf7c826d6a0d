"""Reading an archive, in a worker thread: safe extraction member by member, the
manifest checked first, the counts and the checksum of the compressed bytes at the end."""

from __future__ import annotations

import errno
import hashlib
import os
import tarfile
from pathlib import Path, PurePosixPath
from typing import IO, cast

import zstandard

from chroma_orch.snapshots._threads import QueueReader
from chroma_orch.snapshots.errors import (
    ArchiveSpaceError,
    CorruptArchiveError,
    NotAnArchiveError,
    UnsafeArchiveError,
)
from chroma_orch.snapshots.manifest import MANIFEST_NAME, MAX_MANIFEST_BYTES, Manifest

CHUNK = 1024 * 1024
_SPACE_ERRORS = (errno.ENOSPC, errno.EDQUOT)


def extract(reader: QueueReader, into: Path, expected_sha256: str | None) -> Manifest:
    """Extract the archive ``reader`` gives into the existing, empty ``into``; blocking.
    Leaves cleaning up to the caller."""
    digest, head = hashlib.sha256(), _Head()
    reader.observers += [digest.update, head.update]
    decompressed = zstandard.ZstdDecompressor().stream_reader(
        cast(IO[bytes], reader), read_size=CHUNK, read_across_frames=True
    )
    try:
        manifest = _extract_all(cast(IO[bytes], decompressed), into)
        while decompressed.read(CHUNK):  # the tar's padding and the end of the frame
            pass
        while reader.read(CHUNK):  # anything after it still counts in the checksum
            pass
    except zstandard.ZstdError as error:
        if not head.is_zstd():
            raise NotAnArchiveError(f"not a chroma-orch snapshot archive: {error}") from None
        raise CorruptArchiveError(f"the archive's compression is damaged: {error}") from None
    except OSError as error:
        if error.errno in _SPACE_ERRORS:
            raise ArchiveSpaceError(f"no space left to extract the archive: {error}") from error
        raise
    if expected_sha256 is not None and digest.hexdigest() != expected_sha256.lower():
        raise CorruptArchiveError(
            f"the archive's SHA-256 is {digest.hexdigest()}, expected {expected_sha256}"
        )
    return manifest


class _Head:
    """The first bytes of the archive: whether it is a zstd stream at all, so that a
    decompression error says damaged (ours) or not an archive (anything else)."""

    def __init__(self) -> None:
        self.data = b""

    def update(self, chunk: bytes) -> None:
        if len(self.data) < len(_ZSTD_MAGIC):
            self.data += bytes(chunk[: len(_ZSTD_MAGIC) - len(self.data)])

    def is_zstd(self) -> bool:
        return self.data == _ZSTD_MAGIC


_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def _open_tar(decompressed: IO[bytes]) -> tuple[tarfile.TarFile, Manifest]:
    try:
        tar = tarfile.open(fileobj=decompressed, mode="r|", bufsize=CHUNK)
        first = tar.next()
    except (tarfile.TarError, EOFError) as error:  # ZstdError: damaged, or not zstd
        raise NotAnArchiveError(f"not a chroma-orch snapshot archive: {error}") from None
    if first is None or first.name != MANIFEST_NAME or not first.isreg():
        raise NotAnArchiveError(f"not a chroma-orch snapshot archive: no {MANIFEST_NAME} first")
    if first.size > MAX_MANIFEST_BYTES:
        raise NotAnArchiveError(f"{MANIFEST_NAME} is {first.size} bytes, too large")
    content = tar.extractfile(first)
    assert content is not None  # a regular file
    return tar, Manifest.from_json(content.read())


def _extract_all(decompressed: IO[bytes], into: Path) -> Manifest:
    tar, manifest = _open_tar(decompressed)
    files = total = 0
    try:
        while (member := tar.next()) is not None:  # (iterating would restart at the manifest)
            target = _target(member, into)
            if member.isdir():
                target.mkdir(mode=0o755, parents=True, exist_ok=True)
                continue
            _write_file(tar, member, target)
            files, total = files + 1, total + member.size
    except tarfile.TarError as error:
        raise CorruptArchiveError(f"the archive's tar stream is damaged: {error}") from None
    if (files, total) != (manifest.file_count, manifest.total_bytes):
        raise CorruptArchiveError(
            f"the archive holds {files} files of {total} bytes, its manifest says "
            f"{manifest.file_count} files of {manifest.total_bytes} bytes (truncated?)"
        )
    return manifest


def _target(member: tarfile.TarInfo, into: Path) -> Path:
    """Where ``member`` goes under ``into``; ``UnsafeArchiveError`` for anything but a
    plain file or directory with a relative name inside ``into``."""
    if member.issym() or member.islnk():
        raise UnsafeArchiveError(f"the archive holds a link: {member.name!r}")
    if not (member.isreg() or member.isdir()):
        raise UnsafeArchiveError(f"the archive holds a device or fifo: {member.name!r}")
    name = PurePosixPath(member.name)
    if name.is_absolute() or ".." in name.parts or not name.parts or "\\" in member.name:
        raise UnsafeArchiveError(f"the archive holds an unsafe name: {member.name!r}")
    if name.parts == (MANIFEST_NAME,):
        raise UnsafeArchiveError(f"the archive holds a second {MANIFEST_NAME}")
    target = into.joinpath(*name.parts)
    if not target.resolve().is_relative_to(into.resolve()):
        raise UnsafeArchiveError(f"{member.name!r} would land outside the target")
    return target


def _write_file(tar: tarfile.TarFile, member: tarfile.TarInfo, target: Path) -> None:
    try:
        target.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        descriptor = os.open(target, flags, 0o644)
    except (FileExistsError, NotADirectoryError):
        raise UnsafeArchiveError(f"the archive holds {member.name!r} twice") from None
    source = tar.extractfile(member)
    assert source is not None  # a regular file
    with os.fdopen(descriptor, "wb") as file:
        while chunk := source.read(CHUNK):
            file.write(chunk)
    os.utime(target, (member.mtime, member.mtime))
