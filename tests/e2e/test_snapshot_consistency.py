"""A snapshot contains every write acknowledged before it was requested: proven with
real Chroma servers, a writer that keeps writing through the data plane while
snapshots are taken, and clones of each snapshot read back with a real ``chromadb``
client (ids and nearest-neighbour queries of known vectors).

The writer is sequential: write ``n`` (a batch of ids) is sent only once write
``n - 1`` was acknowledged, and a write that failed (the server is paused for the
copy: the proxy answers 502/503) is sent again until acknowledged (``upsert`` of the
same ids and vectors: idempotent). So a snapshot holds a prefix of the writes, 0 to
k - 1, where

- k >= the number of writes acknowledged before the snapshot was requested (the
  guarantee), and
- k <= the number of writes sent before the snapshot was seen ``ready`` (nothing
  the writer had not yet sent is in it).

A write acknowledged between the request and the capture, or sent and not yet
acknowledged, may or may not be in; the prefix shape says that whatever is in, is
whole and in order (a write is in only if every earlier one is).
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import chromadb
import httpx
from chromadb.config import Settings

from tests.e2e.service import Service, chroma_processes, running_instance
from tests.helpers import bearer, wait_for, wait_phase

DIM = 16
BATCH = 5
SNAPSHOTS = 3
WRITES_BETWEEN = 6
"""Writes acknowledged between one snapshot request and the next (at least)."""


def vector(item: int) -> list[float]:
    rng = random.Random(item)
    return [rng.uniform(-1.0, 1.0) for _ in range(DIM)]


def ids_of(write: int) -> list[str]:
    return [f"w{write}-{k}" for k in range(BATCH)]


def item_of(doc_id: str) -> int:
    write, k = doc_id[1:].split("-")
    return int(write) * BATCH + int(k)


def _collection(base: str, token: str) -> Any:
    client = chromadb.HttpClient(
        host=base, headers=bearer(token), settings=Settings(anonymized_telemetry=False)
    )
    return client.get_or_create_collection("docs", metadata={"hnsw:space": "l2"})


@dataclass
class Writer:
    """Writes 0, 1, 2, ... one at a time, each retried until acknowledged."""

    base: str
    token: str
    sent: int = 0
    """Writes sent at least once (write ``sent - 1`` may not be acknowledged yet)."""
    acked: int = 0
    """Writes acknowledged (0 .. acked - 1)."""
    failures: int = 0
    errors: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def run(self) -> None:
        docs = _collection(self.base, self.token)
        while not self.stop.is_set():
            write = self.acked
            with self.lock:
                self.sent = max(self.sent, write + 1)
            items = [write * BATCH + k for k in range(BATCH)]
            try:
                docs.upsert(ids=ids_of(write), embeddings=[vector(i) for i in items])
            except Exception as exc:  # the server is paused for a copy: 502/503, reset
                self.failures += 1
                self.errors.append(f"{type(exc).__name__}: {exc}"[:300])
                time.sleep(0.05)
                continue
            with self.lock:
                self.acked = write + 1

    def counts(self) -> tuple[int, int]:
        with self.lock:
            return self.sent, self.acked


@dataclass(frozen=True)
class Taken:
    snapshot_id: str
    acked_before_request: int
    sent_before_ready: int


def _present_writes(base: str, token: str) -> int:
    """k, checking that the stored ids are exactly writes 0 .. k - 1 (whole batches:
    a batch is one upsert) and that each answers a query for its own vector."""
    docs = _collection(base, token)
    stored = set(docs.get()["ids"])
    k = len(stored) // BATCH
    assert stored == {i for w in range(k) for i in ids_of(w)}, sorted(stored)
    probes = sorted(stored, key=item_of)
    sample = probes[:: max(1, len(probes) // 20)] + probes[-1:]
    found = docs.query(query_embeddings=[vector(item_of(i)) for i in sample], n_results=1)
    assert [hits[0] for hits in found["ids"]] == sample
    assert all(d[0] < 1e-3 for d in found["distances"])
    return k


async def _wait_acked(writer: Writer, at_least: int) -> None:
    async def enough() -> bool:
        return writer.counts()[1] >= at_least

    await wait_for(enough, timeout=60)


async def _take(http: httpx.AsyncClient, instance_id: str, writer: Writer) -> Taken:
    acked = writer.counts()[1]
    created = await http.post(f"/v1/instances/{instance_id}/snapshots")
    assert created.status_code == 202, created.text
    snapshot_id = created.json()["id"]

    async def ready() -> bool:
        body: dict[str, Any] = (await http.get(f"/v1/snapshots/{snapshot_id}")).json()
        assert body["phase"] != "failed", body
        return bool(body["phase"] == "ready")

    await wait_for(ready, timeout=90)
    return Taken(snapshot_id, acked, writer.counts()[0])


async def _clone(http: httpx.AsyncClient, taken: Taken, n: int) -> str:
    clone = await http.post(
        "/v1/instances", json={"name": f"clone-{n}", "from_snapshot": taken.snapshot_id}
    )
    assert clone.status_code == 202, clone.text
    clone_id: str = clone.json()["instance"]["id"]
    await wait_phase(http, clone_id, "running", timeout=90)
    return clone_id


async def test_snapshot_holds_every_write_acknowledged_before_it_was_requested(
    service: Service,
) -> None:
    token, instance_id = await running_instance(service)
    base = f"{service.url}/i/{instance_id}"
    writer = Writer(base, token)
    thread = threading.Thread(target=writer.run, daemon=True)
    thread.start()
    taken: list[Taken] = []
    try:
        async with service.client(token) as http:
            for _ in range(SNAPSHOTS):
                await _wait_acked(writer, writer.counts()[1] + WRITES_BETWEEN)
                taken.append(await _take(http, instance_id, writer))
            # the source keeps being written after the last snapshot
            await _wait_acked(writer, writer.counts()[1] + WRITES_BETWEEN)
            writer.stop.set()
            await asyncio.to_thread(thread.join, 30)
            clones = await asyncio.gather(*(_clone(http, t, n) for n, t in enumerate(taken)))
            for t, clone_id in zip(taken, clones, strict=True):
                k = await asyncio.to_thread(_present_writes, f"{service.url}/i/{clone_id}", token)
                assert t.acked_before_request <= k <= t.sent_before_ready, (t, k)
    finally:
        writer.stop.set()
        thread.join(30)
    # every acknowledged write is in the source (the pauses lost none), nothing else
    sent, acked = writer.counts()
    k = await asyncio.to_thread(_present_writes, base, token)
    assert acked <= k <= sent


def _server_pid(service: Service, instance_id: str) -> int:
    pid: int = chroma_processes(service.data_dir)[instance_id][0].pid
    return pid


async def test_a_writer_sees_a_pause_not_errors_while_the_server_is_copied(
    service: Service,
) -> None:
    """The built-in proxy holds requests to an instance whose server is stopped for a
    snapshot's copy until it runs again (as it holds them for a culled instance that
    wakes), so a client writing meanwhile sees a slower answer, not the 503s and
    refused connections it met before."""
    token, instance_id = await running_instance(service)
    base = f"{service.url}/i/{instance_id}"
    writer = Writer(base, token)
    thread = threading.Thread(target=writer.run, daemon=True)
    thread.start()
    try:
        async with service.client(token) as http:
            before = _server_pid(service, instance_id)
            for _ in range(2):
                await _wait_acked(writer, writer.counts()[1] + WRITES_BETWEEN)
                await _take(http, instance_id, writer)
            await _wait_acked(writer, writer.counts()[1] + WRITES_BETWEEN)
            after = _server_pid(service, instance_id)
    finally:
        writer.stop.set()
        thread.join(30)
    assert after != before  # the server was stopped and started
    # (a request the server was still answering when it stopped could fail: 502, it
    # may or may not have been applied; none met a refused connection or a 503)
    paused = [e for e in writer.errors if "instance_not_running" in e or "refused" in e]
    assert paused == []
