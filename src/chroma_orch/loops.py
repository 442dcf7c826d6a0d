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
        try:
            await asyncio.wait_for(wake.wait(), timeout=delay)
        except TimeoutError:
            pass
