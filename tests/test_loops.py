"""The background-loop registry: one TaskGroup, named loops, a crash stops them all."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from chroma_orch.loops import Loops


async def test_loops_run_while_entered_and_stop_on_exit() -> None:
    loops = Loops()
    passes: list[int] = []
    ticked = asyncio.Event()

    async def tick() -> None:
        passes.append(1)
        ticked.set()

    loops.every("tick", tick, 0.01)
    assert loops.names == ["tick"]
    async with loops:
        await asyncio.wait_for(ticked.wait(), 5)
    seen = len(passes)
    await asyncio.sleep(0.05)
    assert len(passes) == seen  # no pass after the block left
    assert loops.failed is None


async def test_a_failing_pass_is_survived_but_a_crashing_loop_stops_the_others(
    caplog: pytest.LogCaptureFixture,
) -> None:
    loops = Loops()
    survivor_cancelled = asyncio.Event()
    crash = asyncio.Event()

    async def survivor() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            survivor_cancelled.set()
            raise

    async def failing_pass() -> None:
        raise ValueError("a pass that fails is logged and retried")

    async def crasher() -> None:
        await crash.wait()
        raise RuntimeError("a bug in a loop body")

    loops.add("survivor", survivor)
    loops.every("flaky", failing_pass, 0.01)
    loops.add("crasher", crasher)
    async with loops:
        await asyncio.sleep(0.05)
        assert loops.failed is None  # the flaky loop's failures did not end anything
        crash.set()
        await asyncio.wait_for(survivor_cancelled.wait(), 5)
        assert loops.failed == "crasher"
    assert "background loop crashed loop=crasher" in caplog.text


def test_names_are_unique_and_registration_ends_at_start() -> None:
    loops = Loops()
    loops.add("one", asyncio.Event().wait)
    with pytest.raises(ValueError, match="registered already"):
        loops.add("one", asyncio.Event().wait)


async def test_some_loops_can_be_cancelled_while_the_others_go_on() -> None:
    loops = Loops()
    ticks = {"keep": 0, "stop": 0}

    def counter(name: str) -> Callable[[], Awaitable[None]]:
        async def tick() -> None:
            ticks[name] += 1

        return tick

    loops.every("keep", counter("keep"), 0.01)
    loops.every("stop", counter("stop"), 0.01)
    async with loops:
        await asyncio.sleep(0.05)
        await loops.cancel(["stop"])
        stopped_at, kept_at = ticks["stop"], ticks["keep"]
        await asyncio.sleep(0.05)
        assert ticks["stop"] == stopped_at
        assert ticks["keep"] > kept_at
        assert loops.failed is None  # cancelling is not a crash
