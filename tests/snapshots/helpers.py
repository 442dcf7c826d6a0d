"""Building archives by hand (good and hostile ones) and streaming bytes."""

from __future__ import annotations

import io
import tarfile
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime

import zstandard

from chroma_orch.snapshots.archive import MANIFEST_NAME, Manifest


def manifest(file_count: int = 0, total_bytes: int = 0) -> Manifest:
    return Manifest("inst-1", "1", datetime(2025, 1, 2, tzinfo=UTC), file_count, total_bytes)


def file_member(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes | None]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def special_member(name: str, kind: bytes, linkname: str = "") -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    return info, None


def pax_named(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes | None]:
    """A file whose name only its pax ``path`` record gives (one a ustar name cannot
    hold, such as one with a NUL in it)."""
    info, content = file_member("placeholder", data)
    info.pax_headers = {"path": name}
    return info, content


def long_name_header(declared: int) -> tuple[tarfile.TarInfo, None]:
    """A GNU long-name header declaring a name of ``declared`` bytes, with none after it."""
    info = tarfile.TarInfo("././@LongLink")
    info.type, info.size = tarfile.GNUTYPE_LONGNAME, declared
    return info, None


def build_archive(
    members: list[tuple[tarfile.TarInfo, bytes | None]],
    *,
    manifest_json: bytes | None = None,
    with_manifest: bool = True,
) -> bytes:
    """A zstd tar of ``members`` after a manifest (counting the regular files)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        if with_manifest:
            files = [data for info, data in members if info.isreg() and data is not None]
            raw = manifest_json or manifest(len(files), sum(map(len, files))).to_json()
            tar.addfile(file_member(MANIFEST_NAME, raw)[0], io.BytesIO(raw))
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return zstandard.ZstdCompressor(write_checksum=True).compress(buffer.getvalue())


async def chunks_of(data: bytes, size: int = 64 * 1024) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


class Collect:
    """A sink that keeps what it is given (small archives only)."""

    def __init__(self) -> None:
        self.data = b""

    async def __call__(self, chunks: AsyncIterator[bytes]) -> None:
        async for chunk in chunks:
            self.data += chunk


Mutate = Callable[[bytes], bytes]
