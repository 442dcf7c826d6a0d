"""Bridges between blocking code in a worker thread and async byte streams.

``stream_from_thread`` runs a producer in a thread and yields what it emits;
``feed_thread`` runs a consumer in a thread that reads what an async iterator yields.
Both hold at most ``depth`` chunks in flight, so memory stays bounded whatever the
stream's length, and the event loop only ever moves chunks between queues.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

T = TypeVar("T")
Emit = Callable[[bytes], None]
DEPTH = 4
_POLL = 0.1  # how often a blocked thread looks whether the other side has gone


class StreamClosedError(Exception):
    """The async side of the bridge stopped (closed, cancelled or failed)."""


def _wait(future: concurrent.futures.Future[T], closed: asyncio.Event | None) -> T:
    while True:
        try:
            return future.result(timeout=_POLL)
        except concurrent.futures.TimeoutError:
            if closed is not None and closed.is_set():
                future.cancel()
                raise StreamClosedError from None


async def stream_from_thread(
    produce: Callable[[Emit], None], depth: int = DEPTH
) -> AsyncIterator[bytes]:
    """Yield the chunks ``produce(emit)`` emits from a worker thread; its exception, if
    any, is raised here once the chunks before it were yielded. Closing the iterator
    early makes the producer's next ``emit`` raise ``StreamClosedError``."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[bytes] = asyncio.Queue(depth)
    closed = asyncio.Event()

    def emit(chunk: bytes) -> None:
        if closed.is_set():
            raise StreamClosedError
        _wait(asyncio.run_coroutine_threadsafe(queue.put(chunk), loop), closed)

    worker = asyncio.ensure_future(asyncio.to_thread(produce, emit))
    try:
        while True:
            getter = asyncio.ensure_future(queue.get())
            await asyncio.wait({getter, worker}, return_when=asyncio.FIRST_COMPLETED)
            if getter.done():
                yield getter.result()
                continue
            getter.cancel()
            while not queue.empty():
                yield queue.get_nowait()
            worker.result()
            return
    finally:
        closed.set()

        def drain() -> None:  # let a producer blocked on a full queue see `closed`
            while not queue.empty():
                queue.get_nowait()

        await _join(worker, drain)  # (a StreamClosedError after an early close is expected)


class ChunkReader:
    """A blocking, file-like ``read`` over the chunks ``_fetch`` gives (``None`` at the
    end), calling each of ``observers`` on every chunk once."""

    def __init__(self) -> None:
        self._buffer = memoryview(b"")
        self._eof = False
        self.observers: list[Callable[[bytes], None]] = []

    def _fetch(self) -> bytes | None:
        raise NotImplementedError

    def _observe(self, chunk: bytes) -> None:
        for observe in self.observers:
            observe(chunk)

    def _next_chunk(self) -> bool:
        if self._eof:
            return False
        chunk = self._fetch()
        if chunk is None:
            self._eof = True
            return False
        self._buffer = memoryview(chunk)
        return True

    def read(self, size: int = -1) -> bytes:
        if size < 0:
            parts = [bytes(self._buffer)]
            while self._next_chunk():
                parts.append(bytes(self._buffer))
            self._buffer = memoryview(b"")
            return b"".join(parts)
        if not self._buffer and not self._next_chunk():
            return b""
        whole = self._buffer.obj
        if (
            size >= len(self._buffer)
            and isinstance(whole, bytes)
            and len(whole) == len(self._buffer)
        ):
            self._buffer = memoryview(b"")
            return whole  # a chunk read whole is passed on as it came, without a copy
        piece, self._buffer = self._buffer[:size], self._buffer[size:]
        return bytes(piece)

    def readable(self) -> bool:
        return True


class QueueReader(ChunkReader):
    """``read`` over chunks an async task puts in a queue (``None`` marks the end).
    Used only from the worker thread; observers run there."""

    def __init__(
        self,
        queue: asyncio.Queue[bytes | None],
        loop: asyncio.AbstractEventLoop,
        closed: asyncio.Event,
    ) -> None:
        super().__init__()
        self._queue, self._loop, self._closed = queue, loop, closed

    def _fetch(self) -> bytes | None:
        chunk = _wait(asyncio.run_coroutine_threadsafe(self._queue.get(), self._loop), self._closed)
        if chunk is not None:
            self._observe(chunk)
        return chunk


async def feed_thread(
    chunks: AsyncIterator[bytes], consume: Callable[[QueueReader], T], depth: int = DEPTH
) -> T:
    """Run ``consume(reader)`` in a worker thread, ``reader.read`` giving the bytes of
    ``chunks``; returns what it returns. When ``consume`` finishes (or fails) early the
    rest of ``chunks`` is not read; when ``chunks`` fails, its error is raised here."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[bytes | None] = asyncio.Queue(depth)
    closed = asyncio.Event()
    reader = QueueReader(queue, loop, closed)
    worker = asyncio.ensure_future(asyncio.to_thread(consume, reader))
    try:
        async for chunk in chunks:
            if chunk:
                await _put_unless_done(queue, chunk, worker)
            if worker.done():
                break
        else:
            await _put_unless_done(queue, None, worker)
        return await asyncio.shield(worker)
    finally:
        closed.set()
        await _join(worker)  # (its error was raised above, or a StreamClosedError after a failure)


async def _join(worker: asyncio.Future[Any], drain: Callable[[], None] = lambda: None) -> None:
    """Wait until ``worker``, told to stop, has ended (``drain`` called every poll),
    its exception retrieved; a cancellation meanwhile is raised only after that, so a
    thread still writing never outlives its caller's clean-up (e.g. the removal of
    the directory an extraction fills)."""
    cancelled = False
    while not worker.done():
        drain()
        try:
            await asyncio.wait({worker}, timeout=_POLL)
        except asyncio.CancelledError:
            cancelled = True
    if not worker.cancelled():
        worker.exception()
    if cancelled:
        raise asyncio.CancelledError


async def _put_unless_done(
    queue: asyncio.Queue[bytes | None], item: bytes | None, worker: asyncio.Future[T]
) -> None:
    putter = asyncio.ensure_future(queue.put(item))
    either: set[asyncio.Future[Any]] = {putter, worker}
    await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
    if not putter.done():
        putter.cancel()
