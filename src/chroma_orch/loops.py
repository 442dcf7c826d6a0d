"""Background loops in the Prefect style: one ``run_once``, a runner that keeps time."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)


async def run_periodically(
    name: str,
    run_once: Callable[[], Awaitable[object]],
    interval: float,
    wake: asyncio.Event | None = None,
) -> None:
    """Call ``run_once`` every ``interval`` seconds (timed from the previous start),
    or sooner when ``wake`` is set. Errors are logged and survived; cancellation
    stops the loop within one interval."""
    while True:
        started = time.monotonic()
        if wake is not None:
            wake.clear()
        try:
            await run_once()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("loop pass failed loop=%s", name)
        elapsed = time.monotonic() - started
        if elapsed > interval:
            log.warning(
                "loop pass overran loop=%s elapsed=%.3fs interval=%.3fs", name, elapsed, interval
            )
        delay = max(interval - elapsed, 0.0)
        if wake is None:
            await asyncio.sleep(delay)
            continue
        try:  # asyncio.timeout: on Python 3.11 wait_for can swallow a cancellation
            async with asyncio.timeout(delay):  # that comes as ``wake`` is set, and the
                await wake.wait()  # loop then never stopped (a shutdown hung)
        except TimeoutError:
            pass


LoopBody = Callable[[], Awaitable[object]]
"""A loop's body: runs until cancelled (``run_periodically`` survives its passes' errors)."""


class Loops:
    """A replica's background loops, registered by name and run together under one
    ``asyncio.TaskGroup`` while the registry is entered (``async with``).

    Leaving the block cancels every loop. A loop whose body raises (a bug: the
    periodic runner survives ordinary failures) is logged with its name and ends the
    group, cancelling the others, so a replica never runs half its loops unnoticed:
    ``failed`` names it, and the readiness probe reports the stalled reconciler.
    """

    def __init__(self) -> None:
        self._bodies: dict[str, LoopBody] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._runner: asyncio.Task[None] | None = None
        self.failed: str | None = None

    @property
    def names(self) -> list[str]:
        return list(self._bodies)

    def add(self, name: str, body: LoopBody) -> None:
        if name in self._bodies:
            raise ValueError(f"a loop named {name!r} is registered already")
        if self._runner is not None:
            raise RuntimeError("loops are registered before the registry starts")
        self._bodies[name] = body

    def every(
        self,
        name: str,
        run_once: Callable[[], Awaitable[object]],
        interval: float,
        wake: asyncio.Event | None = None,
    ) -> None:
        """Register ``run_once`` to run every ``interval`` seconds (``run_periodically``)."""
        self.add(name, lambda: run_periodically(name, run_once, interval, wake))

    async def cancel(self, names: list[str]) -> None:
        """Stop these loops, leaving the others running (a part of the service being
        shut down on its own, e.g. ``Reconciler.stop``)."""
        tasks = [self._tasks[name] for name in names if name in self._tasks]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def __aenter__(self) -> Loops:
        self._runner = asyncio.create_task(self._run_all(), name="loops")
        return self

    async def __aexit__(self, *_exc: object) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            runner.cancel()
            await asyncio.gather(runner, return_exceptions=True)

    async def _run_all(self) -> None:
        try:
            async with asyncio.TaskGroup() as group:
                for name, body in self._bodies.items():
                    self._tasks[name] = group.create_task(self._guarded(name, body), name=name)
        except BaseExceptionGroup:
            pass  # logged by _guarded; the group has cancelled the others

    async def _guarded(self, name: str, body: LoopBody) -> None:
        try:
            await body()
        except asyncio.CancelledError:
            raise
        except BaseException:
            self.failed = name
            log.exception("background loop crashed loop=%s; stopping the others", name)
            raise
