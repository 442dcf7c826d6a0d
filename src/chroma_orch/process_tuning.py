"""Every process-wide interpreter setting of the service, in one place.

The app's lifespan applies them (``create_app``), so every way of running the service
gets the same ones: ``chroma-orch serve``, uvicorn started directly
(``uvicorn --factory chroma_orch.app:create_app``), a test running the lifespan. Each
is undone when the lifespan ends. ``/metrics`` shows both as they are
(``chroma_orch_python_switch_interval_seconds``, ``chroma_orch_python_gc_frozen_objects``).

``GIL_SWITCH_INTERVAL`` (1 ms instead of Python's 5 ms), from the lifespan's start:
local servers spawn in worker threads; while the event loop keeps the GIL busy (a
burst of launches), a spawning thread waits up to the switch interval each time it
needs the GIL back, several times per spawn. Measured when introduced (commit ee449f4,
five paired runs of ``bench/lifecycle.py``, 10 launches at once): launch-to-running
p50 0.2985 s -> 0.2890 s, lower in every pair.

``frozen_startup_heap``, from readiness: what start-up built (modules, settings,
routes, pools) lives as long as the service; ``gc.freeze`` moves it out of the
collector's generations, which otherwise walks all of it on every full collection:
pauses that made the long tail of the request latencies in ``bench/api_load.py``
(commit d166d91).

Re-measured with ``bench/api_load.py`` (one replica, 15 s, shared 2-core machine,
alternating runs): without ``gc.freeze`` p99 rose from 56-75 ms to 122-177 ms on
the quiet runs (target: under 100 ms); without the switch interval ``api_load``
showed no difference (56 vs 56 ms p99, within noise): its gain is in launches.
"""

from __future__ import annotations

import gc
import sys
from collections.abc import Iterator
from contextlib import contextmanager

GIL_SWITCH_INTERVAL = 0.001
"""Seconds a thread holds the GIL before another one waiting for it gets it."""


@contextmanager
def gil_switch_interval() -> Iterator[None]:
    """``sys.setswitchinterval(GIL_SWITCH_INTERVAL)`` while in the block."""
    previous = sys.getswitchinterval()
    sys.setswitchinterval(GIL_SWITCH_INTERVAL)
    try:
        yield
    finally:
        sys.setswitchinterval(previous)


@contextmanager
def frozen_startup_heap() -> Iterator[None]:
    """Everything alive on entry (after a full collection) frozen out of the
    collector while in the block."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
