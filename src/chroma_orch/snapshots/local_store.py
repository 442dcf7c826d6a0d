"""``DirectoryStore``: snapshot archives as files under a directory."""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import secrets
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

from chroma_orch.snapshots.store import (
    CHUNK,
    Digest,
    StoredObject,
    StoreObjectMissingError,
    StoreUnavailableError,
    validate_key,
)

_T = TypeVar("_T")


async def _io(call: Callable[..., _T], *args: Any) -> _T:
    """``call(*args)`` in a worker thread; the store's directory failing (not
    writable, not a directory, full, gone) is ``StoreUnavailableError``: a snapshot
    is tried again, then fails with StoreUnavailable."""
    try:
        return await asyncio.to_thread(call, *args)
    except OSError as error:
        raise StoreUnavailableError(f"the snapshot directory cannot be used: {error}") from error


class DirectoryStore:
    """Archives as files under ``root`` (created on first ``put``). ``put`` writes
    ``<key>.<random>.part``, fsyncs it, renames it over ``<key>`` and fsyncs the
    directory: an object is either absent or complete, also after a crash (a crash
    can leave a ``.part`` file behind, removed by the next ``put`` of the same key:
    callers never put one key twice at once; keys never end in ``.part``). File I/O
    runs in worker threads."""

    name = "local"

    def __init__(self, root: Path) -> None:
        self.root = root

    def path_of(self, key: str) -> Path:
        """The file of ``key`` (validated: it cannot leave ``root``)."""
        return self.root.joinpath(*validate_key(key).split("/"))

    async def put(self, key: str, chunks: AsyncIterator[bytes]) -> StoredObject:
        target = self.path_of(key)
        part = target.with_name(f"{target.name}.{secrets.token_hex(6)}.part")
        await _io(_make_dir, target.parent)
        await _io(_discard_parts, target)
        file = await _io(part.open, "xb")
        digest = Digest()
        try:
            try:
                async for chunk in chunks:  # the source's failures are not the store's
                    await _io(_append, file, digest, chunk)
                await _io(_sync, file)
            finally:
                await asyncio.shield(_io(file.close))
            await _io(_publish, part, target)
        except BaseException:
            await asyncio.shield(asyncio.to_thread(_discard, part))
            raise
        return digest.stored()

    async def open_file(self, key: str) -> BinaryIO:
        try:
            return await _io(self.path_of(key).open, "rb")
        except StoreUnavailableError as error:
            if isinstance(error.__cause__, FileNotFoundError):
                raise StoreObjectMissingError(f"no snapshot archive {key!r}") from None
            raise

    async def get(self, key: str) -> AsyncIterator[bytes]:
        file = await self.open_file(key)
        try:
            while chunk := await _io(file.read, CHUNK):
                yield chunk
        finally:
            await asyncio.shield(asyncio.to_thread(file.close))

    async def delete(self, key: str) -> None:
        target = self.path_of(key)
        await _io(target.unlink, True)
        await _io(_discard_parts, target)  # a put of it still written, or cut short

    async def exists(self, key: str) -> bool:
        return await asyncio.to_thread(self.path_of(key).is_file)


def _make_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)


def _discard_parts(target: Path) -> None:
    """The ``.part`` files interrupted puts of ``target`` left."""
    for part in target.parent.glob(f"{glob.escape(target.name)}.*.part"):
        _discard(part)


def _discard(part: Path) -> None:
    with contextlib.suppress(OSError):
        part.unlink(missing_ok=True)


def _append(file: BinaryIO, digest: Digest, chunk: bytes) -> None:
    """Hash and write ``chunk`` (in a worker thread: hashing a chunk on the event loop
    would hold it for milliseconds)."""
    digest.update(chunk)
    file.write(chunk)


def _sync(file: BinaryIO) -> None:
    file.flush()
    os.fsync(file.fileno())


def _publish(part: Path, target: Path) -> None:
    part.rename(target)
    descriptor = os.open(target.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
