"""``DirectoryStore``: snapshot archives as files under a directory."""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import BinaryIO

from chroma_orch.snapshots.store import (
    CHUNK,
    Digest,
    StoredObject,
    StoreObjectMissingError,
    validate_key,
)


class DirectoryStore:
    """Archives as files under ``root`` (created on first ``put``). ``put`` writes
    ``<key>.<random>.part``, fsyncs it, renames it over ``<key>`` and fsyncs the
    directory: an object is either absent or complete, also after a crash (a crash
    can leave a ``.part`` file behind; keys never end in ``.part``). File I/O runs in
    worker threads."""

    name = "local"

    def __init__(self, root: Path) -> None:
        self.root = root

    def path_of(self, key: str) -> Path:
        """The file of ``key`` (validated: it cannot leave ``root``)."""
        return self.root.joinpath(*validate_key(key).split("/"))

    async def put(self, key: str, chunks: AsyncIterator[bytes]) -> StoredObject:
        target = self.path_of(key)
        part = target.with_name(f"{target.name}.{secrets.token_hex(6)}.part")
        await asyncio.to_thread(target.parent.mkdir, parents=True, exist_ok=True)
        file = await asyncio.to_thread(part.open, "xb")
        digest = Digest()
        try:
            try:
                async for chunk in chunks:
                    digest.update(chunk)
                    await asyncio.to_thread(file.write, chunk)
                await asyncio.to_thread(_sync, file)
            finally:
                await asyncio.shield(asyncio.to_thread(file.close))
            await asyncio.to_thread(_publish, part, target)
        except BaseException:
            await asyncio.shield(asyncio.to_thread(part.unlink, missing_ok=True))
            raise
        return digest.stored()

    async def get(self, key: str) -> AsyncIterator[bytes]:
        path = self.path_of(key)
        try:
            file = await asyncio.to_thread(path.open, "rb")
        except FileNotFoundError:
            raise StoreObjectMissingError(f"no snapshot archive {key!r}") from None
        try:
            while chunk := await asyncio.to_thread(file.read, CHUNK):
                yield chunk
        finally:
            await asyncio.shield(asyncio.to_thread(file.close))

    async def delete(self, key: str) -> None:
        await asyncio.to_thread(self.path_of(key).unlink, missing_ok=True)

    async def exists(self, key: str) -> bool:
        return await asyncio.to_thread(self.path_of(key).is_file)


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
