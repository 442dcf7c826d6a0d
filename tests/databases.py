"""Each test's own database, cloned from the migrated template, off the test's path.

Every test still gets a database nobody used before and nobody uses after (one
``CREATE DATABASE ... TEMPLATE`` each, never reused), but the next one is created
while the current test runs, and a used one is dropped behind it: on a thread of
the pool's own, over one admin connection (reopened if the server went away, as
tests that stop the cluster make it). That takes the create, the drop and two
connection set-ups off each database test's setup and teardown.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Coroutine
from concurrent.futures import Future
from typing import Any, TypeVar

import asyncpg

from chroma_orch.db.listener import asyncpg_dsn

T = TypeVar("T")


class DatabasePool:
    """Fresh databases from ``template`` on the server at ``admin_url``, one ahead."""

    def __init__(self, admin_url: str, template: str) -> None:
        self._dsn = asyncpg_dsn(admin_url)
        self._template = template
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="test-databases", daemon=True
        )
        self._thread.start()
        self._conn: asyncpg.Connection | None = None
        self._lock: asyncio.Lock | None = None
        self._next: Future[str] | None = None
        self._pending: list[tuple[str, Future[None]]] = []  # drops, until done

    async def take(self) -> str:
        """A database created for the caller alone; the next one starts being made."""
        ready = self._next or self._submit(self._create())
        self._next = self._submit(self._create())
        try:
            return await asyncio.wrap_future(ready)
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
            # Made while a test had the server stopped: make it again, now.
            return await asyncio.wrap_future(self._submit(self._create()))

    def drop(self, name: str) -> None:
        """Drop a database the caller is done with, in the background."""
        self._pending = [(n, f) for n, f in self._pending if not f.done() or f.exception()]
        self._pending.append((name, self._submit(self._drop(name))))

    def close(self) -> None:
        """Drop the spare database and the used ones still there, stop the thread."""
        if self._next is not None and self._next.exception() is None:
            self.drop(self._next.result())
        for name, dropping in self._pending:
            if dropping.exception() is not None:  # tried while a test had the server down
                self._submit(self._drop(name)).result()
        self._submit(self._disconnect()).result()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def _submit(self, coro: Coroutine[Any, Any, T]) -> Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    async def _create(self) -> str:
        name = f"co_test_{uuid.uuid4().hex[:12]}"
        await self._execute(f'CREATE DATABASE "{name}" TEMPLATE "{self._template}"', copy=True)
        return name

    async def _drop(self, name: str) -> None:
        await self._execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    async def _execute(self, statement: str, *, copy: bool = False) -> None:
        """Run ``statement`` on the admin connection, reconnecting once if it broke;
        ``copy`` (a CREATE DATABASE) has PostgreSQL >= 15 copy the template's files
        (STRATEGY FILE_COPY: a few directories, the cluster runs without fsync) rather
        than write each of its pages to the WAL: measured the faster, for create and drop."""
        self._lock = self._lock or asyncio.Lock()
        async with self._lock:
            for attempt in (1, 2):
                if self._conn is None or self._conn.is_closed():
                    self._conn = await asyncpg.connect(self._dsn)
                try:
                    modern = self._conn.get_server_version() >= (15, 0)
                    await self._conn.execute(
                        statement + (" STRATEGY FILE_COPY" if copy and modern else "")
                    )
                    return
                except (
                    asyncpg.ConnectionDoesNotExistError,
                    asyncpg.InterfaceError,
                    asyncpg.AdminShutdownError,
                    asyncpg.CannotConnectNowError,
                    OSError,
                ):
                    await self._disconnect()
                    if attempt == 2:
                        raise

    async def _disconnect(self) -> None:
        if self._conn is not None:
            self._conn.terminate()
            self._conn = None
