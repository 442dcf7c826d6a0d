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

from chroma_orch.snapshots._threads import ChunkReader
from chroma_orch.snapshots.errors import (
    ArchiveSpaceError,
    CorruptArchiveError,
    NotAnArchiveError,
    UnsafeArchiveError,
)
from chroma_orch.snapshots.manifest import MANIFEST_NAME, MAX_MANIFEST_BYTES, Manifest

CHUNK = 1024 * 1024
_Source = zstandard.ZstdDecompressionReader
_SPACE_ERRORS = (errno.ENOSPC, errno.EDQUOT)


def extract(reader: ChunkReader, into: Path | None, expected_sha256: str | None) -> Manifest:
    """Extract the archive ``reader`` gives into the existing, empty ``into``; blocking.
    Leaves cleaning up to the caller. With ``into`` None, only read it through, with
    every check extraction makes (manifest, member names and types, counts, checksum)."""
    digest, head = hashlib.sha256(), _Head()
    reader.observers += [digest.update, head.update]
    decompressed = zstandard.ZstdDecompressor().stream_reader(
        cast(IO[bytes], reader), read_size=CHUNK, read_across_frames=True
    )
    try:
        manifest = _extract_all(decompressed, into)
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

_NAME_MAX, _PATH_MAX = 255, 4096
"""Bytes in one component of a member's name, and in all of it (Linux's limits)."""


class _Bounded:
    """The decompressed stream as the tar reads it, refusing any one read larger than
    ``CHUNK``. tarfile reads a long name's or a pax header's declared size at once,
    before anything can check it: a few kilobytes of upload declaring gigabytes made
    the replica allocate them. Members' content is copied ``CHUNK`` at a time, and no
    header of an archive ``pack`` writes comes near it."""

    def __init__(self, source: _Source) -> None:
        self.source = source

    def read(self, size: int = -1) -> bytes:
        if size < 0 or size > CHUNK:
            raise UnsafeArchiveError(f"the archive has a tar header of {size} bytes")
        return self.source.read(size)

    def readinto(self, buffer: memoryview) -> int:
        return self.source.readinto(buffer)

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self.source.seek(offset, whence)

    def tell(self) -> int:
        return self.source.tell()


def _open_tar(decompressed: _Source) -> tuple[tarfile.TarFile, Manifest]:
    """The tar over ``decompressed`` and its manifest. Not tarfile's stream mode (which
    copies every buffer several times): the decompressed stream seeks forward, which
    is all a ``TarFile`` read member by member in order asks of its file."""
    try:
        tar = tarfile.TarFile(fileobj=cast(IO[bytes], _Bounded(decompressed)), mode="r")
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


def _extract_all(decompressed: _Source, into: Path | None) -> Manifest:
    tar, manifest = _open_tar(decompressed)
    files = total = 0
    seen: tuple[set[PurePosixPath], set[PurePosixPath]] = (set(), set())  # files, dirs
    buffer = memoryview(bytearray(CHUNK))  # reused for every file's content
    try:
        while (member := tar.next()) is not None:  # (iterating would restart at the manifest)
            if into is None:
                _check_only(member, seen)
            elif member.isdir():
                _target(member, into).mkdir(mode=0o755, parents=True, exist_ok=True)
            else:
                _write_file(tar, member, _target(member, into), buffer)
            if member.isreg():
                files, total = files + 1, total + member.size
    except tarfile.TarError as error:
        raise CorruptArchiveError(f"the archive's tar stream is damaged: {error}") from None
    if (files, total) != (manifest.file_count, manifest.total_bytes):
        raise CorruptArchiveError(
            f"the archive holds {files} files of {total} bytes, its manifest says "
            f"{manifest.file_count} files of {manifest.total_bytes} bytes (truncated?)"
        )
    return manifest


def _check_only(
    member: tarfile.TarInfo, seen: tuple[set[PurePosixPath], set[PurePosixPath]]
) -> None:
    """What extracting ``member`` would refuse, without writing it: also a file named
    twice, or a name under a file (``seen``: the files and directories so far). The
    tar stream skips the content."""
    name, (files, dirs) = _safe_name(member), seen
    parents = set(name.parents)
    if name in files or parents & files or (member.isreg() and name in dirs):
        raise UnsafeArchiveError(f"the archive holds {member.name!r} twice")
    (files if member.isreg() else dirs).add(name)
    dirs.update(parents)


def _target(member: tarfile.TarInfo, into: Path) -> Path:
    """Where ``member`` goes under ``into``; ``UnsafeArchiveError`` for anything but a
    plain file or directory with a relative name inside ``into``."""
    target = into.joinpath(*_safe_name(member).parts)
    if not target.resolve().is_relative_to(into.resolve()):
        raise UnsafeArchiveError(f"{member.name!r} would land outside the target")
    return target


def _safe_name(member: tarfile.TarInfo) -> PurePosixPath:
    """``member``'s relative name; ``UnsafeArchiveError`` for a link, a device or fifo,
    a sparse file, an absolute name, ``..``, or a second manifest."""
    if member.issym() or member.islnk():
        raise UnsafeArchiveError(f"the archive holds a link: {member.name!r}")
    if not (member.isreg() or member.isdir()):
        raise UnsafeArchiveError(f"the archive holds a device or fifo: {member.name!r}")
    if member.issparse():  # (never written by ``pack``; its content is copied as it is)
        raise UnsafeArchiveError(f"the archive holds a sparse file: {member.name!r}")
    name = PurePosixPath(member.name)
    if name.is_absolute() or ".." in name.parts or not name.parts or "\\" in member.name:
        raise UnsafeArchiveError(f"the archive holds an unsafe name: {member.name!r}")
    if "\0" in member.name or not _fits(name):
        # no file can have it: refused here (so by ``verify`` too), not met as an
        # OSError or ValueError by the extraction, which a restore would retry forever
        raise UnsafeArchiveError(f"the archive holds a name no file can have: {member.name!r}")
    if name.parts == (MANIFEST_NAME,):
        raise UnsafeArchiveError(f"the archive holds a second {MANIFEST_NAME}")
    return name


def _fits(name: PurePosixPath) -> bool:
    """Whether a file can have ``name``: each part within ``_NAME_MAX`` bytes, all of
    it within ``_PATH_MAX``."""
    parts = [part.encode(errors="surrogateescape") for part in name.parts]
    return all(len(part) <= _NAME_MAX for part in parts) and len(b"/".join(parts)) < _PATH_MAX


def _write_file(
    tar: tarfile.TarFile, member: tarfile.TarInfo, target: Path, buffer: memoryview
) -> None:
    try:
        target.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        descriptor = os.open(target, flags, 0o644)
    except (FileExistsError, NotADirectoryError):
        raise UnsafeArchiveError(f"the archive holds {member.name!r} twice") from None
    try:
        _copy_content(cast(_Bounded, tar.fileobj), member, descriptor, buffer)
    finally:
        os.close(descriptor)
    os.utime(target, (member.mtime, member.mtime))


def _copy_content(
    source: _Bounded, member: tarfile.TarInfo, descriptor: int, buffer: memoryview
) -> None:
    """``member``'s bytes from the decompressed stream into ``descriptor``, decompressed
    straight into ``buffer`` (no allocation per chunk)."""
    source.seek(member.offset_data)  # where its header ended: forward, or nowhere
    left = member.size
    while left:
        read = source.readinto(buffer[: min(left, len(buffer))])
        if not read:
            raise tarfile.ReadError("unexpected end of data")
        _write_all(descriptor, buffer[:read])
        left -= read


def _write_all(descriptor: int, data: memoryview) -> None:
    while data:
        data = data[os.write(descriptor, data) :]
