"""A restore on a runtime whose data are local directories: the archive is extracted
into a directory of its own while the instance's ``pre_restore`` snapshot is packed
from its data directory (neither touches the other's files, and on a small machine
decompression and compression overlap), and the new data is swapped in only once that
snapshot is ``ready``. The restore thus keeps the guarantee of doing them in turn:
data nobody could get back is never replaced (``PreRestoreSnapshotFailed``)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable

from chroma_orch.reconciler.decisions import Decision
from chroma_orch.reconciler.snapshots import DataWork, RestoreFailure

PRE_RESTORE_FAILED = RestoreFailure(
    "PreRestoreSnapshotFailed",
    "the snapshot of the data a restore would replace failed; the data is kept",
)


class _PreRestoreNotReady(Exception):
    """The ``pre_restore`` snapshot did not end ``ready`` in this pass: no swap."""


async def load_beside_pre_restore(
    data: DataWork, restore_id: uuid.UUID, snapshots: Awaitable[Decision | None]
) -> Decision | RestoreFailure | None:
    """Load ``restore_id``'s data while ``snapshots`` (the pass's open snapshots, the
    ``pre_restore`` one among them) runs. None once swapped in; else the decision of
    the snapshots (e.g. a retry: the restore runs again next pass) or why it failed.

    The load stops as soon as the snapshots end without a ready ``pre_restore``: its
    data could not be swapped in this pass anyway, and its own retries (each a read
    of a store the snapshot may just have found down) would only hold the pass."""
    task = asyncio.ensure_future(snapshots)

    async def pre_restore_ready() -> bool:
        pending = await asyncio.shield(task)
        return pending is None and not await data.pre_restore_failed()

    async def before_swap() -> None:
        if not await pre_restore_ready():
            raise _PreRestoreNotReady

    load = asyncio.ensure_future(data.load(restore_id, before_swap=before_swap))
    try:
        await asyncio.wait({task, load}, return_when=asyncio.FIRST_COMPLETED)
        if not load.done() and not await pre_restore_ready():
            load.cancel()
        await asyncio.wait({load})
        if load.cancelled() or isinstance(load.exception(), _PreRestoreNotReady):
            failure = None  # what the snapshots decided comes below
        else:
            failure = load.result()  # (raises the load's own error)
        pending = await task
    except BaseException:
        for running in (task, load):
            running.cancel()
        await asyncio.wait({task, load})
        for ended in (task, load):
            if not ended.cancelled():
                ended.exception()  # retrieved: the error raised is this one (or the same)
        raise
    if pending is not None:
        return pending
    if await data.pre_restore_failed():
        return PRE_RESTORE_FAILED
    return failure
