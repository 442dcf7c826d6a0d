"""An instance's data operations, carried out in its reconcile pass under its lease:
its open snapshots (oldest first) and the data a restore names.

Never two at once per instance (one pass holds the lease), and every step can be
redone after a crash:

- a snapshot is captured from the instance's data directory while no server runs
  (Chroma's SQLite and HNSW files change in place: no online copy of them is provably
  consistent). A stopped instance's directory is packed as it is. A live server is
  quiesced: stopped, its directory copied to ``<data_dir>/snapshot-work/<id>`` (the
  copy is complete once renamed there), and started again at once; the next pass
  packs the copy into the store. A pass that dies in the quiesce is resumed by the
  next: the copy made again from the directory at rest unless it was complete (the
  instance reads ``stopping``: no start comes first), then the start.
- a snapshot that is ``deleting`` has its archive removed, then its row.
- a restore loads the archive into a new directory (checked against its checksum
  before it becomes the data) and swaps it in (``DataDirectories.replace_data``).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import shutil
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chroma_orch.db import rows, snapshot_rows, snapshot_schedules
from chroma_orch.db.instance_writes import Fence
from chroma_orch.db.models import Instance, Intent, Snapshot, SnapshotKind
from chroma_orch.db.outbox import commit
from chroma_orch.domain.snapshot_archives import (
    archive_key,
    check_server_compatible,
    manifest_for,
)
from chroma_orch.domain.snapshot_states import SnapshotPhase, check_snapshot_phase
from chroma_orch.reconciler.decisions import LeaseLostError
from chroma_orch.runtimes.base import DataDirectories
from chroma_orch.settings import SnapshotSettings
from chroma_orch.snapshots.archive import ArchiveError, Manifest, pack_stream, unpack, unpack_file
from chroma_orch.snapshots.store import (
    LocalFiles,
    SnapshotStore,
    StoreObjectMissingError,
    StoreUnavailableError,
)

log = logging.getLogger(__name__)

WORK_DIR = "snapshot-work"
_BACKOFF_BASE = 1.0
_BACKOFF_MAX = 60.0


@dataclass(frozen=True)
class RestoreFailure:
    """Why the data a restore named could not be loaded (the instance keeps its own)."""

    reason: str
    message: str


class DataWork:
    """The data operations of one instance, for one pass (see the module docstring)."""

    def __init__(
        self,
        inst: Instance,
        fence: Fence,
        *,
        files: DataDirectories | None,
        store: SnapshotStore,
        sessions: async_sessionmaker[AsyncSession],
        settings: SnapshotSettings,
        work_root: Path,
    ) -> None:
        self.inst = inst
        self.fence = fence
        self.files = files
        self.store = store
        self.sessions = sessions
        self.settings = settings
        self.work_root = work_root
        self.retry_in: float | None = None
        """Seconds until a snapshot that met an unavailable store is tried again."""

    # -- snapshots ----------------------------------------------------------------

    async def next_open(self) -> Snapshot | None:
        async with self.sessions() as session:
            return await snapshot_rows.next_open(session, self.inst.id)

    def copy_of(self, snapshot: Snapshot) -> Path | None:
        """The complete copy a quiesced capture left for ``snapshot``, if any."""
        copy = self._work(snapshot)
        return copy if copy.is_dir() else None

    async def capture(self, snapshot: Snapshot) -> None:
        """Copy the instance's data directory (its server stopped) for ``snapshot``."""
        files = self._files()
        await self.begin(snapshot)
        if snapshot.phase == SnapshotPhase.DELETING:  # purged meanwhile
            return
        work = self._work(snapshot)
        partial = work.with_name(f"{work.name}.partial")
        source = files.data_path(str(self.inst.id))
        await asyncio.to_thread(_copy_tree, source, partial, work)

    async def store_data(self, snapshot: Snapshot) -> bool:
        """Pack the copy of ``snapshot`` (or, with none, the data directory of the
        stopped instance) into the store; ``ready`` with its size and checksum, or
        ``failed``. False when the store is unavailable and it will be tried again
        (``retry_in``)."""
        await self.begin(snapshot)
        if snapshot.phase == SnapshotPhase.DELETING:  # purged meanwhile: deleted next
            return True
        copy = self.copy_of(snapshot)
        source = copy if copy is not None else self._files().data_path(str(self.inst.id))
        try:
            done = await self._pack(snapshot, source)
        except StoreUnavailableError as exc:
            return await self._store_failed(snapshot, str(exc))
        except (ArchiveError, OSError) as exc:
            await self.fail(snapshot, "SnapshotFailed", str(exc))
            return True
        await self.change(snapshot, done)
        await self._drop_copy(snapshot)
        if snapshot.phase == SnapshotPhase.DELETING:  # purged while packed: deleted next
            log.info("snapshot deleted while taken snapshot=%s instance=%s",
                     snapshot.id, self.inst.id)  # fmt: skip
            return True
        log.info("snapshot ready snapshot=%s instance=%s bytes=%s",
                 snapshot.id, self.inst.id, done["size_bytes"])  # fmt: skip
        return True

    async def delete(self, snapshot: Snapshot) -> bool:
        """Remove ``snapshot``'s archive (recorded before it was stored: also one a
        pass stored and died before it could say so), then its row; False when the
        store is unavailable (tried again later)."""
        try:
            if snapshot.location is not None:
                await self.store.delete(snapshot.location)
        except StoreUnavailableError as exc:
            log.warning("snapshot store unavailable snapshot=%s error=%s", snapshot.id, exc)
            self.retry_in = _BACKOFF_BASE
            return False
        await self._drop_copy(snapshot)
        await self.remove_row(snapshot)
        return True

    async def remove_row(self, snapshot: Snapshot) -> None:
        """Remove ``snapshot``'s row (its data is gone)."""
        async with self.sessions() as session:
            if not await snapshot_rows.remove(session, snapshot, self.fence):
                raise LeaseLostError(str(self.inst.id))
            await commit(session)

    async def prune_scheduled(self) -> None:
        """After a scheduled snapshot: the instance's ready scheduled snapshots past its
        schedule's ``keep`` become ``deleting`` (removed next, in this pass)."""
        async with self.sessions() as session:
            keep = await snapshot_schedules.keep_of(session, self.inst.tenant_id, self.inst.id)
            doomed = (
                []
                if keep is None
                else await snapshot_schedules.beyond_keep(session, self.inst.id, keep)
            )
            for old in doomed:
                deleting = {"phase": SnapshotPhase.DELETING.value}
                if not await snapshot_rows.change(session, old, deleting, self.fence):
                    raise LeaseLostError(str(self.inst.id))
            await commit(session)

    async def pre_delete_failed(self) -> bool:
        """Whether the ``pre_delete`` snapshot of the instance's current delete failed:
        the delete then keeps the data rather than lose it. Only one taken since the
        delete was asked for counts (it is taken in the transaction that asks; the
        first intent of the generation, so that no later one hides it): before, an
        earlier delete's failed one counted once a later delete's ready one was
        deleted, and a later pass recorded data kept where none was (an undelete then
        started the instance empty). With the intents purged, every one counts."""
        asked = rows.first_asked(self.inst.id, self.inst.generation)
        return await self._newest_failed(SnapshotKind.PRE_DELETE, since=asked)

    async def pre_restore_failed(self) -> bool:
        """Whether the ``pre_restore`` snapshot of the instance's current restore
        failed: the restore then does not replace the data. Only one taken since the
        load's generation was asked for counts (a restore takes it in the transaction
        that asks; a rollback, which asks for its generation without an intent, takes
        it after the upgrade's): an undelete, a clone or an import takes none, and an
        earlier restore's failed one was that restore's (before, it failed every
        undelete of the instance after it). The load's generation, not the current
        one: a stop asked while the load waited hid the failed one, and the data was
        replaced with no copy of it."""
        asked = (
            select(func.max(Intent.created_at))
            .where(rows.asked_for(self.inst.id, rows.load_generation(self.inst)))
            .scalar_subquery()
        )
        return await self._newest_failed(SnapshotKind.PRE_RESTORE, since=asked)

    async def _newest_failed(self, kind: SnapshotKind, since: ColumnElement[datetime]) -> bool:
        async with self.sessions() as session:  # (``since`` NULL: no intent, every one counts)
            phase = await snapshot_rows.newest_phase(session, self.inst.id, kind.value, since)
        return phase == SnapshotPhase.FAILED

    # -- restores -----------------------------------------------------------------

    async def load(
        self,
        snapshot_id: uuid.UUID,
        before_swap: Callable[[], Awaitable[None]] | None = None,
    ) -> RestoreFailure | None:
        """Replace the instance's data with ``snapshot_id``'s (its server stopped);
        a failure says why, and the instance's own data is untouched. ``before_swap``
        is awaited once the new data is extracted and checked, before it goes live:
        raising there keeps the old data (the error is raised here)."""
        async with self.sessions() as session:
            snapshot = await session.get(Snapshot, snapshot_id)
        if snapshot is None or snapshot.phase != SnapshotPhase.READY or not snapshot.location:
            return RestoreFailure("SnapshotUnavailable", f"snapshot {snapshot_id} is not ready")
        location, checksum = snapshot.location, snapshot.checksum

        async def fill(into: Path) -> None:
            manifest = await self._unpack(location, into, checksum)
            check_server_compatible(manifest.chroma_version)
            if before_swap is not None:
                await before_swap()

        for attempt in range(self.settings.attempts):
            try:
                await self._files().replace_data(str(self.inst.id), fill)
                return None
            except ArchiveError as exc:
                return RestoreFailure(exc.reason, exc.message)
            except StoreObjectMissingError as exc:
                return RestoreFailure("ArchiveMissing", f"{exc} in the {self.store.name} store")
            except StoreUnavailableError as exc:
                if attempt + 1 == self.settings.attempts:
                    return RestoreFailure("StoreUnavailable", str(exc))
                await asyncio.sleep(min(_BACKOFF_BASE * 2**attempt, _BACKOFF_MAX))
        raise AssertionError("unreachable")

    async def _unpack(self, location: str, into: Path, checksum: str | None) -> Manifest:
        """The archive at ``location`` extracted into ``into``: from a local file in
        worker threads where the store has one, else streamed from the store."""
        if isinstance(self.store, LocalFiles):
            return await unpack_file(await self.store.open_file(location), into, checksum)
        return await unpack(self.store.get(location), into, checksum)

    # -- helpers ------------------------------------------------------------------

    def _files(self) -> DataDirectories:
        assert self.files is not None, "callers check DataWork.files first"
        return self.files

    def _work(self, snapshot: Snapshot) -> Path:
        return self.work_root / WORK_DIR / str(snapshot.id)

    async def _pack(self, snapshot: Snapshot, source: Path) -> dict[str, Any]:
        key = await self._new_key(snapshot)
        manifest = manifest_for(snapshot, source)
        stored = await self.store.put(key, pack_stream(source, manifest))
        return {
            "phase": SnapshotPhase.READY.value,
            "size_bytes": stored.size,
            "checksum": stored.sha256,
            "chroma_version": manifest.chroma_version,
            "store": self.store.name,
            "location": key,
            "failure_reason": None,
            "failure_message": None,
            "completed_at": datetime.now(UTC),
        }

    async def _new_key(self, snapshot: Snapshot) -> str:
        """A key of this try's own, recorded on the snapshot (under the lease) before
        anything is stored there; what an earlier try recorded (its pass died, or lost
        the lease) is removed."""
        earlier = snapshot.location
        key = archive_key(snapshot, secrets.token_hex(6))
        await self.change(snapshot, {"store": self.store.name, "location": key})
        if earlier is not None:
            await self.store.delete(earlier)
        return key

    async def begin(self, snapshot: Snapshot) -> None:
        if snapshot.phase == SnapshotPhase.PENDING:
            await self.change(
                snapshot,
                {
                    "phase": SnapshotPhase.RUNNING.value,
                    "started_at": datetime.now(UTC),
                    "attempts": snapshot.attempts + 1,
                },
            )

    async def _store_failed(self, snapshot: Snapshot, message: str) -> bool:
        """The try ``snapshot.attempts`` (counted when it began) met an unavailable
        store: the next one begins after a backoff, or, that was the last, it fails."""
        tried = snapshot.attempts
        if tried >= self.settings.attempts:
            await self.fail(snapshot, "StoreUnavailable", f"{message} (after {tried} tries)")
            return True
        await self.change(snapshot, {"attempts": tried + 1})
        self.retry_in = min(_BACKOFF_BASE * 2**tried, _BACKOFF_MAX)
        log.warning("snapshot store unavailable snapshot=%s attempt=%d error=%s",
                    snapshot.id, tried, message)  # fmt: skip
        return False

    async def fail(self, snapshot: Snapshot, reason: str, message: str) -> None:
        log.warning("snapshot failed snapshot=%s reason=%s message=%s",
                    snapshot.id, reason, message)  # fmt: skip
        await self.change(
            snapshot,
            {
                "phase": SnapshotPhase.FAILED.value,
                "failure_reason": reason,
                "failure_message": message[:2000],
                "completed_at": datetime.now(UTC),
            },
        )
        await self._drop_copy(snapshot)

    async def fail_unsupported(self, snapshot: Snapshot, runtime: str, detail: str = "") -> None:
        message = f"the {runtime} runtime cannot snapshot this instance's data"
        await self.fail(snapshot, "Unsupported", f"{message}: {detail}" if detail else message)

    async def change(self, snapshot: Snapshot, values: dict[str, Any]) -> None:
        if "phase" in values:
            check_snapshot_phase(SnapshotPhase(snapshot.phase), SnapshotPhase(values["phase"]))
        async with self.sessions() as session:
            if not await snapshot_rows.change(session, snapshot, values, self.fence):
                raise LeaseLostError(str(self.inst.id))
            await commit(session)

    async def _drop_copy(self, snapshot: Snapshot) -> None:
        work = self._work(snapshot)
        for path in (work, work.with_name(f"{work.name}.partial")):
            await asyncio.to_thread(shutil.rmtree, path, ignore_errors=True)


def _copy_tree(source: Path, partial: Path, done: Path) -> None:
    """Copy ``source`` to ``partial`` and rename it ``done`` (complete only then)."""
    shutil.rmtree(partial, ignore_errors=True)
    shutil.rmtree(done, ignore_errors=True)
    partial.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if source.is_dir():
        shutil.copytree(source, partial, symlinks=True)
    else:
        partial.mkdir(mode=0o700)
    partial.chmod(0o700)
    partial.rename(done)
