"""What every benchmark needs: a database, a work directory, percentiles.

Benchmarks import the project from the source tree (``sys.path`` below) and the
test helpers that run the real service (``tests.e2e.service.Service``).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import asyncpg
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from chroma_orch.db.embedded import EmbeddedPostgres  # noqa: E402
from chroma_orch.db.listener import asyncpg_dsn  # noqa: E402
from chroma_orch.settings import ReconcilerSettings  # noqa: E402
from tests.conftest import with_database  # noqa: E402


def default_reconciler_timing() -> dict[str, str]:
    """Environment for ``Service`` that puts the reconciler's lease and loop intervals
    back to the product's defaults (the test service shortens them, so that tests
    converge fast, at the cost of more background queries)."""
    fields = ReconcilerSettings.model_fields
    names = ("lease_seconds", "observe_interval", "resync_interval")
    return {f"CHROMA_ORCH_RECONCILER__{n.upper()}": str(fields[n].default) for n in names}


@contextmanager
def workdir() -> Iterator[Path]:
    """A scratch directory under /tmp an unprivileged PostgreSQL can traverse."""
    path = Path(tempfile.mkdtemp(prefix="co-bench-", dir="/tmp"))
    os.chmod(path, 0o711)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextmanager
def postgres(directory: Path) -> Iterator[str]:
    """An admin URL: CHROMA_ORCH_TEST_DATABASE_URL, or an embedded cluster."""
    external = os.environ.get("CHROMA_ORCH_TEST_DATABASE_URL")
    if external:
        yield external
        return
    cluster = EmbeddedPostgres(directory / "pg", database="postgres")
    cluster.start()
    try:
        yield cluster.admin_url
    finally:
        cluster.stop()


async def fresh_database(admin_url: str) -> str:
    name = f"co_bench_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(asyncpg_dsn(admin_url))
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return with_database(admin_url, name)


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def summary(samples: list[float], scale: float = 1.0, digits: int = 4) -> dict[str, Any]:
    """median/p50, p90, p99, min, max (times ``scale``, e.g. 1000 for ms) and n."""
    if not samples:
        return {"n": 0}
    return {
        "p50": round(statistics.median(samples) * scale, digits),
        "p90": round(percentile(samples, 0.9) * scale, digits),
        "p99": round(percentile(samples, 0.99) * scale, digits),
        "min": round(min(samples) * scale, digits),
        "max": round(max(samples) * scale, digits),
        "n": len(samples),
    }


def cpu_seconds(pids: Sequence[int] | None = None) -> float:
    """User and system CPU seconds used so far by ``pids`` (None: this process)."""
    if pids is None:
        times = os.times()
        return times.user + times.system
    return sum(sum(psutil.Process(pid).cpu_times()[:2]) for pid in pids)


async def cpu_seconds_at(when: float, pids: Sequence[int] | None = None) -> float:
    """``cpu_seconds`` once ``time.monotonic()`` reaches ``when`` (a window's start)."""
    await asyncio.sleep(max(0.0, when - time.monotonic()))
    return cpu_seconds(pids)


def cpu_use(used: float, seconds: float, operations: int) -> dict[str, float]:
    """CPU used in a measured window: cores busy, and milliseconds per operation (a
    figure that moves less with the machine's other load than throughput does)."""
    return {
        "cores_busy": round(used / seconds, 2),
        "ms_per_op": round(1000 * used / max(operations, 1), 3),
    }
