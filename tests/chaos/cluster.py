"""Helpers for the fault tests: a set of service replicas sharing one database and
one data directory, direct reads of the database's truth, and the invariants every
fault test ends with (converged, one server per running instance, no orphans, no
leaked ports, no open intents, an event stream without holes)."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import psutil
import websockets

from chroma_orch.db.listener import asyncpg_dsn
from tests.conftest import ADMIN_TOKEN, port_window
from tests.e2e.service import Service, chroma_processes

Json = dict[str, Any]

PHASE_FOR_DESIRED = {"running": "running", "stopped": "stopped", "deleted": "deleted"}
OPEN_INTENT = ("pending", "in_progress")


class ReplicaSet:
    """N ``Service`` processes on one database, one data directory and one port range."""

    def __init__(self, database_url: str, data_dir: Path, size: int, **env: str) -> None:
        port_range = port_window()
        self.data_dir = data_dir
        self.replicas = [
            Service(database_url, data_dir, CHROMA_ORCH_LOCAL__PORT_RANGE=port_range, **env)
            for _ in range(size)
        ]

    def __getitem__(self, index: int) -> Service:
        return self.replicas[index]

    def __len__(self) -> int:
        return len(self.replicas)

    async def start(self) -> None:
        await asyncio.gather(*(replica.start(timeout=60) for replica in self.replicas))

    def alive(self) -> list[Service]:
        return [r for r in self.replicas if r.process is not None and r.process.returncode is None]

    async def stop(self) -> None:
        await asyncio.gather(*(replica.stop() for replica in self.replicas))
        kill_servers(self.data_dir)


def kill_servers(data_dir: Path) -> None:
    """SIGKILL every Chroma server under ``data_dir`` at once, then reap them."""
    procs = [p for group in chroma_processes(data_dir).values() for p in group]
    for proc in procs:
        try:
            proc.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(procs, timeout=10)


# -- the database's truth ------------------------------------------------------


@dataclass(frozen=True)
class Row:
    id: str
    name: str
    desired_state: str
    phase: str
    generation: int
    observed_generation: int
    endpoint_port: int | None
    failure_reason: str | None
    failure_message: str | None
    restart_count: int

    @property
    def settled(self) -> bool:
        return (
            self.observed_generation == self.generation
            and self.phase == PHASE_FOR_DESIRED[self.desired_state]
        )


async def query(database_url: str, sql: str, *args: object) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        rows: list[asyncpg.Record] = await conn.fetch(sql, *args)
        return rows
    finally:
        await conn.close()


async def instance_rows(database_url: str) -> dict[str, Row]:
    records = await query(
        database_url,
        "SELECT id, name, desired_state, phase, generation, observed_generation, "
        "endpoint_port, failure_reason, failure_message, restart_count FROM instances",
    )
    return {str(r["id"]): Row(**{**dict(r), "id": str(r["id"])}) for r in records}


async def intent_rows(database_url: str) -> dict[str, Json]:
    records = await query(
        database_url, "SELECT id, instance_id, action, status, error, attempts FROM intents"
    )
    return {str(r["id"]): dict(r) for r in records}


async def allocated_ports(database_url: str) -> dict[str, int]:
    records = await query(database_url, "SELECT instance_id, port FROM allocated_ports")
    return {str(r["instance_id"]): int(r["port"]) for r in records}


async def event_seqs(database_url: str) -> list[int]:
    return [int(r["seq"]) for r in await query(database_url, "SELECT seq FROM events ORDER BY seq")]


async def wait_converged(database_url: str, timeout: float = 60.0) -> dict[str, Row]:
    """Every instance's phase matches its desired state for its current generation,
    and no intent is open. Fails with what is still unsettled."""
    deadline = time.monotonic() + timeout
    while True:
        rows = await instance_rows(database_url)
        intents = await intent_rows(database_url)
        unsettled = [r for r in rows.values() if not r.settled]
        open_intents = [i for i in intents.values() if i["status"] in OPEN_INTENT]
        if not unsettled and not open_intents:
            return rows
        if time.monotonic() > deadline:
            raise AssertionError(
                f"not converged within {timeout}s: unsettled={unsettled} open={open_intents}"
            )
        await asyncio.sleep(0.2)


def assert_local_invariants(
    rows: dict[str, Row], ports: dict[str, int], data_dir: Path
) -> dict[str, list[psutil.Process]]:
    """One live Chroma server per running instance and nothing else; allocated ports
    are exactly the running instances' ports; deleted instances left no data."""
    running = {i: r for i, r in rows.items() if r.phase == "running"}
    processes = chroma_processes(data_dir)
    duplicates = {i: [p.pid for p in ps] for i, ps in processes.items() if len(ps) != 1}
    assert not duplicates, f"duplicate servers: {duplicates}"
    orphans = {i: rows[i].phase if i in rows else "unknown" for i in processes if i not in running}
    assert not orphans, f"servers of instances that should not run: {orphans}"
    missing = [i for i in running if i not in processes]
    assert not missing, f"running instances without a server: {missing}"
    expected_ports = {i: r.endpoint_port for i, r in running.items()}
    assert ports == expected_ports, f"allocated ports {ports} != running {expected_ports}"
    for instance_id, procs in processes.items():
        listening = {c.laddr.port for c in procs[0].net_connections("tcp") if c.status == "LISTEN"}
        assert running[instance_id].endpoint_port in listening, (instance_id, listening)
    leftovers = [
        i for i, r in rows.items() if r.phase == "deleted" and (data_dir / "instances" / i).exists()
    ]
    assert not leftovers, f"data directories of deleted instances remain: {leftovers}"
    return processes


def spawn_counts(data_dir: Path, ids: Iterable[str]) -> dict[str, int]:
    """How many times the local runtime spawned a server for each instance: every
    spawn writes one header line into the instance's log."""
    counts: dict[str, int] = {}
    for instance_id in ids:
        path = data_dir / "logs" / f"{instance_id}.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        counts[instance_id] = sum(
            1 for line in text.splitlines() if line.startswith("--- chroma-orch ")
        )
    return counts


def gaps(seqs: list[int]) -> list[tuple[int, int]]:
    """(after, before) pairs around every hole in an ascending list of sequence numbers."""
    return [(a, b) for a, b in zip(seqs, seqs[1:], strict=False) if b != a + 1]


# -- the event stream ----------------------------------------------------------


def ws_url(service: Service, since: int | None = None) -> str:
    url = service.url.replace("http://", "ws://") + "/v1/events"
    return url if since is None else f"{url}?since={since}"


async def stream_until(service: Service, since: int, last: int, timeout: float = 30.0) -> list[int]:
    """Connect to ``service`` with ``since`` and collect event seqs up to ``last``."""
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    seen: list[int] = []
    async with websockets.connect(
        ws_url(service, since), additional_headers=headers, open_timeout=10
    ) as ws:
        deadline = time.monotonic() + timeout
        while not seen or seen[-1] < last:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"stream stopped at {seen[-1:]} before {last}")
            message: Json = json.loads(await asyncio.wait_for(ws.recv(), remaining))
            assert message["type"] in ("event", "heartbeat"), message["type"]
            if message["type"] == "event":
                seen.append(int(message["seq"]))
    return seen


class Subscriber:
    """A live /v1/events socket on one replica, collecting event seqs in the background."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self.seqs: list[int] = []
        self.snapshot_seq: int | None = None
        self.other: list[str] = []
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Subscriber:
        self._task = asyncio.create_task(self._run())
        await asyncio.wait_for(self._ready.wait(), 30)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        async with websockets.connect(
            ws_url(self.service), additional_headers=headers, open_timeout=10
        ) as ws:
            async for raw in ws:
                message: Json = json.loads(raw)
                if message["type"] == "snapshot":
                    self.snapshot_seq = int(message["seq"])
                    self._ready.set()
                elif message["type"] == "event":
                    self.seqs.append(int(message["seq"]))
                elif message["type"] != "heartbeat":
                    self.other.append(str(message["type"]))

    async def wait_for_seq(self, last: int, timeout: float = 30.0) -> list[int]:
        deadline = time.monotonic() + timeout
        while not self.seqs or self.seqs[-1] < last:
            if self._task is not None and self._task.done():
                self._task.result()
                raise AssertionError("the socket closed")
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.service.url} stream at {self.seqs[-1:]}, not {last}")
            await asyncio.sleep(0.05)
        return self.seqs


def chaos_seed(default: int) -> int:
    """The chaos seed: ``CHROMA_ORCH_CHAOS_SEED`` replays another run."""
    return int(os.environ.get("CHROMA_ORCH_CHAOS_SEED", default))
