"""Export and import: a ready snapshot's archive streamed out of the store, and an
uploaded archive streamed into it to become a new instance's data.

An import writes nothing the database knows of until the upload is complete and
verified (manifest, member names, counts, checksum, Chroma major version); any
refusal removes what reached the store. No transaction is held during the upload.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import update

from chroma_orch.db import snapshot_rows
from chroma_orch.db.driver import driver
from chroma_orch.db.models import Instance, Intent, Snapshot
from chroma_orch.domain.schemas import InstanceCreate
from chroma_orch.domain.snapshot_archives import check_server_compatible
from chroma_orch.domain.snapshot_states import SnapshotKind, SnapshotPhase
from chroma_orch.domain.snapshots import SnapshotService
from chroma_orch.errors import (
    ConflictError,
    IncompatibleArchiveVersionError,
    InvalidArchiveError,
    NotFoundError,
    PayloadTooLargeError,
    ServiceUnavailableError,
    UnsupportedMediaTypeError,
)
from chroma_orch.snapshots.archive import (
    ArchiveError,
    IncompatibleArchiveError,
    Manifest,
    verify,
)
from chroma_orch.snapshots.store import (
    SnapshotStore,
    StoredObject,
    StoreObjectMissingError,
    StoreUnavailableError,
)


@dataclass(frozen=True)
class ArchiveDownload:
    """A snapshot's archive, ready to stream: its first chunk was read already, so a
    missing object is an error before any header is sent."""

    snapshot: Snapshot
    filename: str
    chunks: AsyncIterator[bytes]


async def open_export(
    snapshots: SnapshotService, store: SnapshotStore, snapshot_id: uuid.UUID
) -> ArchiveDownload:
    """The archive of a visible, ready snapshot kept in ``store`` (404, else 409)."""
    snapshot = await snapshots.get(snapshot_id)
    if snapshot.phase != SnapshotPhase.READY:
        raise ConflictError(f"snapshot {snapshot_id} is {snapshot.phase}: only a ready one")
    if snapshot.store != store.name or not snapshot.location:
        raise ConflictError(f"snapshot {snapshot_id} is kept in {snapshot.store}, not an archive")
    chunks = aiter(store.get(snapshot.location))
    try:
        first = await anext(chunks, b"")
    except StoreObjectMissingError:
        raise NotFoundError(f"the archive of snapshot {snapshot_id} is missing") from None
    except StoreUnavailableError as error:
        raise _store_down(error) from None
    return ArchiveDownload(snapshot, f"snapshot-{snapshot.id}.tar.zst", _chain(first, chunks))


async def _chain(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    yield first
    async for chunk in rest:
        yield chunk


async def limited(chunks: AsyncIterator[bytes], limit: int) -> AsyncIterator[bytes]:
    """``chunks``, or ``PayloadTooLargeError`` once more than ``limit`` bytes came."""
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if size > limit:
            raise PayloadTooLargeError(f"the archive is larger than {limit} bytes")
        yield chunk


ARCHIVE_TYPES = ("application/octet-stream", "application/zstd", "application/x-zstd")
"""Media types an uploaded archive may be sent as."""


def _store_down(error: StoreUnavailableError) -> ServiceUnavailableError:
    """The 503 an export or import answers while the snapshot store is unavailable."""
    return ServiceUnavailableError(f"the snapshot store is unavailable: {error}")


class ArchiveImports:
    """Instances created from an uploaded archive (``POST /v1/instances/import``)."""

    def __init__(self, snapshots: SnapshotService, store: SnapshotStore) -> None:
        self.snapshots = snapshots
        self.store = store

    async def create(
        self,
        data: InstanceCreate,
        media_type: str,
        body: AsyncIterator[bytes],
        declared_size: int | None,
        idempotency_key: str | None = None,
    ) -> tuple[Instance, Intent]:
        """Store ``body`` (at most ``max_import_bytes``), verify it, then create the
        instance with an ``import`` snapshot of it as the data its first start loads."""
        limit = self.snapshots.policy.max_import_bytes
        if declared_size is not None and declared_size > limit:
            raise PayloadTooLargeError(f"the archive is larger than {limit} bytes")
        tenant_id = self.snapshots.principal.tenant_scope(data.tenant_id)
        if media_type not in ARCHIVE_TYPES:
            raise UnsupportedMediaTypeError(
                f"send the archive as application/octet-stream, not {media_type!r}"
            )
        await self.snapshots.check_quota(tenant_id)
        await self.snapshots.session.commit()  # hold no transaction during the upload
        instance_id, snapshot_id = uuid.uuid4(), uuid.uuid4()
        key = f"{tenant_id}/{instance_id}/{snapshot_id}.tar.zst"
        stored = await self._put(key, limited(body, limit))
        try:
            manifest = await self._verify(key, stored)
            # one transaction: the reconciler must not see the instance before it is
            # told to load the archive (its NOTIFY goes out with the commit)
            await driver(self.snapshots.session)
            created = await self.snapshots.instances.create(
                data, idempotency_key, instance_id=instance_id, upload_sha256=stored.sha256
            )
            if created[0].id != instance_id:  # a replay: the first request's archive is used
                await self.store.delete(key)
                return created
            await self._record(created[0], snapshot_id, key, stored, manifest)
            return created
        except BaseException:
            await asyncio.shield(self.store.delete(key))
            raise

    async def _put(self, key: str, chunks: AsyncIterator[bytes]) -> StoredObject:
        try:
            return await self.store.put(key, chunks)
        except StoreUnavailableError as error:
            raise _store_down(error) from None

    async def _verify(self, key: str, stored: StoredObject) -> Manifest:
        """The stored upload's manifest once it reads as a whole, safe archive of this
        Chroma major version; 422 problems otherwise."""
        try:
            manifest = await verify(self.store.get(key), stored.sha256)
            check_server_compatible(manifest.chroma_version)
        except IncompatibleArchiveError as error:
            raise IncompatibleArchiveVersionError(error.message) from None
        except ArchiveError as error:
            raise InvalidArchiveError(f"{error.message} ({error.reason})") from None
        except StoreUnavailableError as error:
            raise _store_down(error) from None
        return manifest

    async def _record(
        self,
        instance: Instance,
        snapshot_id: uuid.UUID,
        key: str,
        stored: StoredObject,
        manifest: Manifest,
    ) -> None:
        """The ``import`` snapshot (ready) and the instance told to load it first."""
        now = datetime.now(UTC)
        snapshot = Snapshot(
            id=snapshot_id,
            instance_id=instance.id,
            tenant_id=instance.tenant_id,
            kind=SnapshotKind.IMPORT.value,
            phase=SnapshotPhase.READY.value,
            store=self.store.name,
            location=key,
            size_bytes=stored.size,
            checksum=stored.sha256,
            chroma_version=manifest.chroma_version,
            attempts=0,
            started_at=now,
            completed_at=now,
        )
        session = self.snapshots.session
        await snapshot_rows.add(session, snapshot)
        await session.execute(
            update(Instance)
            .where(Instance.id == instance.id)
            .values(restore_snapshot_id=snapshot_id, restore_generation=instance.generation)
        )
        instance.restore_snapshot_id = snapshot_id
        instance.restore_generation = instance.generation
