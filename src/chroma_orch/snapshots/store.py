"""Where archives live: the ``SnapshotStore`` protocol both drivers implement.

Keys look like ``<tenant_id>/<instance_id>/<snapshot_id>.<try>.tar.zst``: segments of
letters, digits, ``.``, ``_``, ``-`` separated by ``/`` (``validate_key``). ``put``
consumes the chunks to their end and makes the object visible only once complete,
returning its size and the SHA-256 of its bytes; ``get`` is an async generator, so a
missing object raises ``StoreObjectMissingError`` at the first iteration. Transient
failures (the store unreachable, 5xx, throttling) raise ``StoreUnavailableError``:
callers retry with backoff.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import BinaryIO, Protocol, runtime_checkable

CHUNK = 1024 * 1024
_SEGMENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,199}")
MAX_KEY_LENGTH = 512


@dataclass(frozen=True)
class StoredObject:
    """An object ``put`` wrote: its size and the SHA-256 (hex) of its bytes."""

    size: int
    sha256: str


class StoreError(Exception):
    """A snapshot store failed."""


class StoreObjectMissingError(StoreError):
    """No object under that key."""


class StoreUnavailableError(StoreError):
    """The store could not be reached or refused for now (5xx, throttling): retry."""


class InvalidKeyError(StoreError, ValueError):
    """A key that is not ``segment/segment/...`` of safe characters."""


def validate_key(key: str) -> str:
    """``key`` when it is safe as a relative path and object name, else ``InvalidKeyError``:
    no leading ``/``, no empty, ``.`` or ``..`` segments, no ``.part`` suffix (the
    directory store's partial files), at most ``MAX_KEY_LENGTH`` characters."""
    segments = key.split("/")
    valid = (
        len(key) <= MAX_KEY_LENGTH
        and not key.endswith(".part")
        and all(_SEGMENT.fullmatch(s) and s not in {".", ".."} for s in segments)
    )
    if not valid:
        raise InvalidKeyError(f"not a valid snapshot store key: {key!r}")
    return key


@dataclass
class Digest:
    """Counts and hashes bytes as they go by."""

    size: int = 0
    _hash: hashlib._Hash = field(default_factory=hashlib.sha256)

    def update(self, chunk: bytes) -> None:
        self.size += len(chunk)
        self._hash.update(chunk)

    def stored(self) -> StoredObject:
        return StoredObject(self.size, self._hash.hexdigest())


class SnapshotStore(Protocol):
    """A place for archives (``DirectoryStore``, ``S3Store``)."""

    name: str  # "local" | "s3"

    async def put(self, key: str, chunks: AsyncIterator[bytes]) -> StoredObject:
        """Store ``chunks`` under ``key`` (replacing an object there), atomically."""
        ...

    def get(self, key: str) -> AsyncIterator[bytes]:
        """The object's bytes in chunks; ``StoreObjectMissingError`` if absent."""
        ...

    async def delete(self, key: str) -> None:
        """Remove the object; nothing happens when there is none."""
        ...

    async def exists(self, key: str) -> bool:
        """Whether an object is stored under ``key``."""
        ...


@runtime_checkable
class LocalFiles(Protocol):
    """A store whose objects are local files (``DirectoryStore``): a restore reads the
    file in worker threads (``archive.unpack_file``) rather than chunk by chunk
    through the event loop."""

    async def open_file(self, key: str) -> BinaryIO:
        """The object's file, open for reading; ``StoreObjectMissingError`` if absent,
        ``StoreUnavailableError`` when it cannot be opened."""
        ...
