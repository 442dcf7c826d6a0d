"""process_tuning's start-up freeze: a service process (one lifespan) collects its
garbage before freezing; a process running the lifespan again does not walk its
whole heap each time (issue 13: the test suite runs it some hundred times)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import gc, weakref
    from chroma_orch import process_tuning

    gc.disable()  # only the collections process_tuning asks for
    full = []
    gc.callbacks.append(
        lambda phase, info: full.append(1) if phase == "start" and info["generation"] == 2 else None
    )

    class Node:
        pass

    def garbage_cycle():
        node = Node()
        node.me = node
        return weakref.ref(node)

    for entry in range(3):
        cycle = garbage_cycle()
        with process_tuning.frozen_startup_heap():
            assert gc.get_freeze_count() > 0
            print(entry, "garbage frozen" if cycle() is not None else "garbage collected")
        assert gc.get_freeze_count() == 0
    print("full collections", len(full))
    """
)


def test_the_first_lifespan_of_a_process_collects_then_freezes_later_ones_only_freeze() -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.splitlines() == [
        "0 garbage collected",  # a service's start-up garbage is not frozen
        "1 garbage frozen",  # until the end of that lifespan, then back to the collector
        "2 garbage frozen",
        "full collections 1",
    ]
