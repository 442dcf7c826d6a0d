"""WebSocket subscribers in worker processes, for ``bench/ws_fanout.py``.

Each worker (a ``spawn``ed process) opens its share of the subscriptions, says
``ready``, and records for every event frame its ``seq`` and the moment it was
decoded (``time.monotonic()``: CLOCK_MONOTONIC, one clock for every process of
the machine, so the parent compares it with its COMMIT times). The decoding
happens in the workers, not in the process that writes and times the changes.

Protocol on the pipe: parent → ``Job``; worker → ``("ready", seconds to connect)``;
parent → expected deliveries (int); worker → ``("done", received, frames)`` once
it has that many (or after ``Job.wait`` seconds): ``received[i]`` is a list of
``(seq, monotonic)`` for its subscriber ``i``, ``frames`` one raw frame per seq.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

import websockets


@dataclass(frozen=True)
class Job:
    targets: list[tuple[str, dict[str, str]]]  # (URL, headers) per subscriber
    snapshot_first: bool  # the service sends a snapshot frame on connect
    wait: float = 15.0


class Worker:
    def __init__(self, job: Job, pipe: Connection) -> None:
        self.job = job
        self.pipe = pipe
        self.received: list[list[tuple[int, float]]] = [[] for _ in job.targets]
        self.frames: dict[int, str] = {}
        self.count = 0
        self.target: int | None = None
        self.complete = asyncio.Event()

    async def listen(self, ws: websockets.ClientConnection, index: int) -> None:
        mine = self.received[index]
        async for raw in ws:
            message = json.loads(raw)
            if message["type"] == "event":
                mine.append((message["seq"], time.monotonic()))
                self.frames.setdefault(message["seq"], str(raw))
                self.count += 1
                if self.target is not None and self.count >= self.target:
                    self.complete.set()

    async def run(self) -> None:
        started = time.monotonic()
        sockets = []
        for url, headers in self.job.targets:
            # no frame limit: an admin's snapshot lists the whole fleet (> 1 MiB at 1,000)
            ws = await websockets.connect(url, additional_headers=headers, max_size=None)
            if self.job.snapshot_first:
                assert json.loads(await ws.recv())["type"] == "snapshot"
            sockets.append(ws)
        readers = [asyncio.create_task(self.listen(ws, n)) for n, ws in enumerate(sockets)]
        self.pipe.send(("ready", time.monotonic() - started))
        target: int = await asyncio.to_thread(self.pipe.recv)
        self.target = target
        if self.count >= target:
            self.complete.set()
        try:
            await asyncio.wait_for(self.complete.wait(), self.job.wait)
        except TimeoutError:
            pass  # the parent counts what is missing
        for task in readers:
            task.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
        await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
        self.pipe.send(("done", self.received, self.frames))


def _main(job: Job, pipe: Connection) -> None:
    asyncio.run(Worker(job, pipe).run())


class Pool:
    """``processes`` workers sharing ``targets`` round robin; results in ``targets``' order."""

    def __init__(
        self, targets: list[tuple[str, dict[str, str]]], processes: int, snapshot: bool
    ) -> None:
        context = multiprocessing.get_context("spawn")
        self.count = len(targets)
        self.processes = min(processes, len(targets))
        self.pipes: list[Connection] = []
        self.workers: list[Any] = []
        for n in range(self.processes):
            parent, child = context.Pipe()
            job = Job(targets[n :: self.processes], snapshot)
            worker = context.Process(target=_main, args=(job, child), daemon=True)
            worker.start()
            self.pipes.append(parent)
            self.workers.append(worker)

    async def ready(self) -> float:
        """Seconds until every worker had all its subscriptions open."""
        replies = await asyncio.gather(*(asyncio.to_thread(p.recv) for p in self.pipes))
        return max(float(seconds) for _, seconds in replies)

    async def finish(
        self, expected: list[int]
    ) -> tuple[list[list[tuple[int, float]]], dict[int, str]]:
        """Tell each worker how many deliveries its subscribers expect; gather them."""
        for n, pipe in enumerate(self.pipes):
            pipe.send(sum(expected[n :: self.processes]))
        replies = await asyncio.gather(*(asyncio.to_thread(p.recv) for p in self.pipes))
        received: list[list[tuple[int, float]]] = [[] for _ in range(self.count)]
        frames: dict[int, str] = {}
        for n, (_, lists, seen) in enumerate(replies):
            received[n :: self.processes] = lists
            frames.update(seen)
        for worker in self.workers:
            worker.join(10)
        return received, frames
