"""Every process-wide interpreter setting of the service, in one place: there is one.

The app's lifespan applies it (``create_app``), so every way of running the service
gets it: ``chroma-orch serve``, uvicorn started directly
(``uvicorn --factory chroma_orch.app:create_app``), a test running the lifespan. It is
undone when the lifespan ends; ``/metrics`` shows it
(``chroma_orch_python_gc_frozen_objects``).

``frozen_startup_heap``, from readiness: what start-up built (modules, settings,
routes, pools) lives as long as the service; ``gc.freeze`` moves it out of the
collector's generations, which otherwise walks all of it on every full collection:
pauses that made the long tail of the request latencies in ``bench/api_load.py``
(commit d166d91). Re-measured with ``bench/api_load.py`` (one replica, 15 s, shared
2-core machine, alternating runs): without it p99 rose from 56-75 ms to 122-177 ms on
the quiet runs (target: under 100 ms), far beyond the noise, so it stays.

It freezes without a full collection first. Measured at readiness of ``chroma-orch
serve`` on the embedded defaults: a full collection there found 499 unreachable
objects among 148k and took 54 ms, and it took longer the more the process held (an
app started again in one process, as the tests do). Those few hundred objects of
start-up garbage stay frozen while the service runs (tens of KB), and are collected
normally once the lifespan ends and unfreezes them.

Removed (issue 13): a 1 ms GIL switch interval. Its gain was 3 % of launch-to-running
(0.2985 s -> 0.2890 s p50, commit ee449f4), within the run-to-run noise of
``bench/lifecycle.py``, and ``bench/api_load.py`` showed none (56 vs 56 ms p99).
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def frozen_startup_heap() -> Iterator[None]:
    """Everything tracked on entry frozen out of the collector while in the block."""
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
