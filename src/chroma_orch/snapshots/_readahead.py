"""Reading a local archive file in worker threads only (``DirectoryStore``): one thread
reads the file ahead and computes the observers (the checksum) on each chunk, the
consumer (decompression and extraction) reads from it in another. The chunks never
pass through the event loop, and hashing runs beside decompression rather than
before it; at most ``depth`` chunks wait between the two, so memory stays bounded.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from typing import BinaryIO, TypeVar

from chroma_orch.snapshots._threads import DEPTH, ChunkReader, StreamClosedError
from chroma_orch.snapshots.store import StoreUnavailableError

T = TypeVar("T")
CHUNK = 1024 * 1024
_POLL = 0.1  # how often a blocked thread looks whether the other side has gone

_Item = bytes | BaseException | None


class ReadAhead(ChunkReader):
    """A blocking, file-like ``read`` over ``file``, which a thread of its own reads
    ahead (started by the first ``read``). A read error of the file is
    ``StoreUnavailableError``, as the store's ``get`` would raise it."""

    def __init__(self, file: BinaryIO, chunk: int = CHUNK, depth: int = DEPTH) -> None:
        super().__init__()
        self._file, self._chunk = file, chunk
        self._queue: queue.Queue[_Item] = queue.Queue(depth)
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None

    def _fetch(self) -> bytes | None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="archive-read", daemon=True)
            self._thread.start()
        while True:
            if self._closed.is_set():
                raise StreamClosedError
            try:
                item = self._queue.get(timeout=_POLL)
            except queue.Empty:
                continue
            if isinstance(item, BaseException):
                raise item
            return item

    def _run(self) -> None:
        try:
            while chunk := self._file.read(self._chunk):
                self._observe(chunk)
                if not self._put(chunk):
                    return
            self._put(None)
        except OSError as error:
            self._put(StoreUnavailableError(f"the snapshot archive cannot be read: {error}"))
        except BaseException as error:  # handed to the consumer, raised there
            self._put(error)
        finally:
            self._file.close()

    def _put(self, item: _Item) -> bool:
        while not self._closed.is_set():
            try:
                self._queue.put(item, timeout=_POLL)
                return True
            except queue.Full:
                continue
        return False

    def cancel(self) -> None:
        """Make the consumer's next ``read`` raise ``StreamClosedError`` (any thread)."""
        self._closed.set()

    def close(self) -> None:
        """Stop reading: the thread closes the file once its current read returns (not
        waited for: a read that hangs holds no one up), or at once if none started."""
        self._closed.set()
        if self._thread is None:
            self._file.close()


async def consume_in_thread(reader: ReadAhead, consume: Callable[[ReadAhead], T]) -> T:
    """Run ``consume(reader)`` in a worker thread (``reader`` reading its file ahead in
    another); returns what it returns. On cancellation the consumer stops at its next
    read and is waited for; the reading thread ends after its current read."""

    def run() -> T:
        try:
            return consume(reader)
        finally:
            reader.close()

    worker = asyncio.ensure_future(asyncio.to_thread(run))
    try:
        return await asyncio.shield(worker)
    finally:
        reader.cancel()
        if not worker.done():
            await asyncio.wait({worker})
        if not worker.cancelled():
            worker.exception()  # retrieved: raised above, or a StreamClosedError on cancel
