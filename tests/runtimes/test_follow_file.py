"""follow_file: the tail, then appended lines as they are written."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from chroma_orch.runtimes.local.launch import follow_file


async def test_tail_then_new_lines_then_truncation(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    log.write_text("one\ntwo\nthree\n")
    batches: asyncio.Queue[list[str]] = asyncio.Queue()

    async def follow() -> None:
        async for lines in follow_file(log, 2, 0.01):
            await batches.put(lines)

    task = asyncio.create_task(follow())
    try:
        assert await asyncio.wait_for(batches.get(), 5) == ["two", "three"]
        with log.open("a") as out:
            out.write("four\nfi")  # an unfinished line waits for its end
        assert await asyncio.wait_for(batches.get(), 5) == ["four"]
        with log.open("a") as out:
            out.write("ve\n")
        assert await asyncio.wait_for(batches.get(), 5) == ["five"]
        log.write_text("new\n")  # replaced by a shorter file: read from the start
        assert await asyncio.wait_for(batches.get(), 5) == ["new"]
    finally:
        task.cancel()


async def test_a_missing_file_is_waited_for(tmp_path: Path) -> None:
    log = tmp_path / "later.log"
    follower = follow_file(log, 10, 0.01)
    assert await anext(follower) == []
    log.write_text("hello\n")
    assert await asyncio.wait_for(anext(follower), 5) == ["hello"]
    await follower.aclose()


async def test_following_ends_once_the_file_is_removed(tmp_path: Path) -> None:
    """The instance was deleted (its log with it): nothing more can come."""
    log = tmp_path / "server.log"
    log.write_text("one\n")
    follower = follow_file(log, 10, 0.01)
    assert await anext(follower) == ["one"]
    log.unlink()
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(anext(follower), 5)
