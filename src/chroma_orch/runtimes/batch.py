"""Coalescing of lookups into batched calls (DataLoader style): ECS's
``DescribeTasks``, the simulated cloud's polls.

Every caller, whether the liveness pass with hundreds of servers or a reconcile
with one, asks ``BatchLoader.load``; keys arriving within ``window`` seconds, or
while earlier batches are in flight, are sent together, at most ``max_batch``
per call. A key already waiting shares the pending answer.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

log = logging.getLogger(__name__)

Fetch = Callable[[list[str]], Awaitable[dict[str, Any]]]
"""Looks up a batch of keys; keys absent from the answer resolve to None."""


class BatchLoader:
    def __init__(self, fetch: Fetch, *, window: float = 0.005, max_batch: int = 100) -> None:
        self._fetch = fetch
        self._window = window
        self._max_batch = max_batch
        self._pending: dict[str, asyncio.Future[Any]] = {}
        self._dispatcher: asyncio.Task[None] | None = None
        self._inflight: set[asyncio.Task[None]] = set()

    async def load(self, keys: Iterable[str]) -> dict[str, Any]:
        """Look up ``keys`` (deduplicated) as part of shared batches."""
        loop = asyncio.get_running_loop()
        futures: dict[str, asyncio.Future[Any]] = {}
        for key in keys:
            future = self._pending.get(key)
            if future is None:
                future = self._pending[key] = loop.create_future()
            futures[key] = future
        if self._pending and self._dispatcher is None:
            self._dispatcher = asyncio.create_task(self._dispatch(), name="describe-batch")
        results = await asyncio.gather(*(asyncio.shield(f) for f in futures.values()))
        return dict(zip(futures, results, strict=True))

    async def _dispatch(self) -> None:
        try:
            while self._pending:
                await asyncio.sleep(self._window)
                while self._pending:
                    batch = dict(list(self._pending.items())[: self._max_batch])
                    for key in batch:
                        del self._pending[key]
                    task = asyncio.create_task(self._run(batch))
                    self._inflight.add(task)
                    task.add_done_callback(self._inflight.discard)
                if self._inflight:  # gather what arrives while these calls run
                    await asyncio.wait(set(self._inflight))
        finally:
            self._dispatcher = None

    async def _run(self, batch: dict[str, asyncio.Future[Any]]) -> None:
        try:
            found = await self._fetch(list(batch))
        except asyncio.CancelledError:
            for future in batch.values():
                future.cancel()
            raise
        except Exception as exc:
            for future in batch.values():
                if not future.done():
                    future.set_exception(exc)
                    future.exception()  # retrieved: callers that left must not warn
            return
        for key, future in batch.items():
            if not future.done():
                future.set_result(found.get(key))

    async def aclose(self) -> None:
        tasks = [t for t in (self._dispatcher, *self._inflight) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for future in self._pending.values():
            future.cancel()
        self._pending.clear()
