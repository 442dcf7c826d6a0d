"""Fleet benchmark (issue 17): the real service with N instances on the simulated cloud.

    python bench/fleet.py [--quick] [--instances 10000] [--tenants 1000] [--replicas 1]

The service (``chroma-orch serve`` through ``bench/fleet_serve.py``: RLIMIT_NOFILE
raised, two bench hooks) runs with ``CHROMA_ORCH_RUNTIME=sim`` on an embedded
PostgreSQL this bench owns (started with pg_stat_statements and auto_explain
preloaded, logging to a JSON log), the reconciler's intervals at the product's
defaults. Fargate-like starts (median 40 s, p95 120 s) at ``--time-scale`` (0.01:
~0.4 s), crashes and retirements at ``--crash-rate``/``--retirement-rate`` per
simulated server-hour. Prints one JSON document:

- ``create``: N instances over ``--tenants`` tenants through the API, ``--clients``
  concurrent clients: rate and latency; then the time until every one runs.
- ``api``: p50/p99 per operation (status, list: first page and the next by cursor,
  stop/start, delete and create again) under a steady mix for ``--seconds``, while the
  simulated fleet crashes and retires servers.
- ``api_paced``: the same mix in an open loop at ``--rate`` operations a second,
  each timed from when it was due: the latency of a request at that load (the closed
  loop's is mostly its own clients' queue).
- ``reconciler``: an idle window (no API load): loop passes, per-instance pass
  time (``chroma_orch_reconcile_seconds``), statements per loop pass and the top
  statements (pg_stat_statements).
- ``burst``: 1,000 instances stopped (each seen ``stopped``), then started at once:
  seconds from the first start request until all run, ÷ the simulated runtime's own
  floor: the start-rate
  limit's schedule plus each start's drawn latency (what an ideal control plane takes).
- ``crash``: servers crashed through the hook; crash-to-noticed (the first event of
  the instance after its crash, on one WebSocket subscriber) vs the liveness interval.
- ``events``: events per second delivered through 1 subscriber and through 500
  (``bench/ws_subscribers.py`` processes), each during a burst of state changes.
- ``memory``: the service's RSS; PostgreSQL size per instance.
- ``explain``: the plans (auto_explain, ANALYZE + BUFFERS, real parameters) of the
  hot statements at N; any Seq Scan on instances or events flagged.
- ``restart``: kill -9 of the service with N instances, started again: seconds to
  /readyz, and to "the reconciler has observed every instance": no intent waiting and
  every instance running again (the in-process cloud dies with the process, so every
  server is started again: this is a full fleet restart through the start-rate limit).

``--replicas 2`` needs a simulated cloud shared by the replicas: ``--cloud`` starts
one (``python -m chroma_orch.runtimes.sim.cloud_server`` on the bench's simulation
settings), ``--cloud-url`` names a running one (``CHROMA_ORCH_SIM__CLOUD_URL``). With
the in-process cloud two replicas cannot share servers, so it refuses without one.
With a shared cloud the simulated servers' responders run in the cloud's process, as
real servers would run elsewhere, and a restarted service adopts the servers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import psutil
import websockets

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.api_load import _metric  # noqa: E402
from bench.harness import (  # noqa: E402
    default_reconciler_timing,
    fresh_database,
    summary,
    workdir,
)
from bench.ws_subscribers import Pool  # noqa: E402
from chroma_orch.db.embedded import EmbeddedPostgres  # noqa: E402
from chroma_orch.db.listener import asyncpg_dsn  # noqa: E402
from chroma_orch.settings import ReconcilerSettings  # noqa: E402
from tests.conftest import ADMIN_TOKEN  # noqa: E402
from tests.e2e.service import Service  # noqa: E402

SERVE = Path(__file__).with_name("fleet_serve.py")
PG_SETTINGS = {
    "shared_preload_libraries": "pg_stat_statements', 'auto_explain",  # a list: two literals
    "logging_collector": "on",
    "log_destination": "jsonlog",
    "log_directory": "log",
    "pg_stat_statements.max": "5000",
    "auto_explain.log_analyze": "on",
    "auto_explain.log_buffers": "on",
    "auto_explain.log_format": "json",
    "auto_explain.log_min_duration": "-1",  # on only for the explain window
    "max_connections": "300",
    "log_file_mode": "0644",
}
HOT_TABLES = ("instances", "events")


# --- PostgreSQL -------------------------------------------------------------------


@contextmanager
def postgres(directory: Path) -> Iterator[EmbeddedPostgres]:
    """An embedded cluster with pg_stat_statements and auto_explain preloaded."""
    cluster = EmbeddedPostgres(directory / "pg", database="postgres")
    cluster.start()
    try:
        asyncio.run(_alter_system(cluster.admin_url, PG_SETTINGS))
        cluster.stop()
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


async def _alter_system(admin_url: str, settings: dict[str, str]) -> None:
    conn = await asyncpg.connect(asyncpg_dsn(admin_url))
    try:
        for name, value in settings.items():
            await conn.execute(f"ALTER SYSTEM SET {name} = '{value}'")
        await conn.execute("SELECT pg_reload_conf()")
    finally:
        await conn.close()


async def _sql(url: str, query: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        return list(await conn.fetch(query, *args))
    finally:
        await conn.close()


STATEMENTS = """
SELECT query, calls, total_exec_time, rows, shared_blks_hit + shared_blks_read AS blocks
FROM pg_stat_statements
WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
ORDER BY total_exec_time DESC
"""


async def statements(url: str) -> list[dict[str, Any]]:
    rows = await _sql(url, STATEMENTS)
    return [dict(r) for r in rows if "pg_stat_statements" not in r["query"]]


def top(rows: list[dict[str, Any]], count: int = 8) -> list[dict[str, Any]]:
    return [
        {
            "query": " ".join(r["query"].split())[:300],
            "calls": r["calls"],
            "total_ms": round(r["total_exec_time"], 1),
            "mean_ms": round(r["total_exec_time"] / max(1, r["calls"]), 3),
            "rows_per_call": round(r["rows"] / max(1, r["calls"]), 1),
            "blocks_per_call": round(r["blocks"] / max(1, r["calls"]), 1),
        }
        for r in rows[:count]
    ]


# --- the service ------------------------------------------------------------------


def service_env(args: argparse.Namespace) -> dict[str, str]:
    limits = {"run": [args.start_rate, args.start_rate], "describe": [100, 20], "stop": [100, 40]}
    env = {
        **default_reconciler_timing(),
        "CHROMA_ORCH_RUNTIME": "sim",
        "CHROMA_ORCH_SIM__TIME_SCALE": str(args.time_scale),
        "CHROMA_ORCH_SIM__CRASH_RATE": str(args.crash_rate),
        "CHROMA_ORCH_SIM__RETIREMENT_RATE": str(args.retirement_rate),
        "CHROMA_ORCH_SIM__API_LIMITS": json.dumps(limits),
        "CHROMA_ORCH_SIM__SEED": "17",
        "CHROMA_ORCH_MAX_INSTANCES_PER_TENANT": str(max(100, 2 * args.instances // args.tenants)),
        "CHROMA_ORCH_LIMITS__MAX_CONCURRENT_STARTS": "100000",
        "CHROMA_ORCH_EVENTS__MAX_SOCKETS_PER_TOKEN": "1000",
        "CHROMA_ORCH_LOG_LEVEL": "WARNING",
    }
    if args.cloud_url:
        env["CHROMA_ORCH_SIM__CLOUD_URL"] = args.cloud_url
    return env


@contextmanager
def sim_cloud(args: argparse.Namespace) -> Iterator[None]:
    """With ``--cloud``: the shared simulated cloud in a process of its own (on the
    bench's simulation settings), ``args.cloud_url`` pointing at it."""
    if not args.cloud:
        yield
        return
    sim = {k: v for k, v in service_env(args).items() if k.startswith("CHROMA_ORCH_SIM__")}
    process = subprocess.Popen(
        [sys.executable, "-m", "chroma_orch.runtimes.sim.cloud_server", "--port", "0"],
        stdout=subprocess.PIPE,
        env={**os.environ, **sim},
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line.startswith("listening on "):
            raise SystemExit(f"the simulated cloud did not start: {line!r}")
        args.cloud_url = line.removeprefix("listening on ").strip()
        args.cloud_pid = process.pid
        yield
    finally:
        process.kill()
        process.wait()


def make_service(database: str, base: Path, n: int, args: argparse.Namespace) -> Service:
    service = Service(database, base / f"data-{n}", **service_env(args))
    service.command = (str(SERVE),)
    return service


class Api:
    """aiohttp sessions (one per token) against one replica, timing each call."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.sessions: dict[str, aiohttp.ClientSession] = {}
        self.latency: dict[str, list[float]] = defaultdict(list)
        self.errors: dict[str, int] = defaultdict(int)
        self.recording = False

    def session(self, token: str = ADMIN_TOKEN) -> aiohttp.ClientSession:
        if token not in self.sessions:
            self.sessions[token] = aiohttp.ClientSession(
                self.url,
                headers={"Authorization": f"Bearer {token}"},
                timeout=aiohttp.ClientTimeout(total=120),
                connector=aiohttp.TCPConnector(limit=64),
            )
        return self.sessions[token]

    async def call(
        self,
        op: str,
        method: str,
        path: str,
        token: str = ADMIN_TOKEN,
        due: float | None = None,
        **kw: Any,
    ) -> Any:
        """The answer's JSON (None on an error, counted); its latency recorded from
        ``due`` (a ``perf_counter`` time: when an open-loop schedule meant to send it)
        or else from now."""
        started = time.perf_counter() if due is None else due
        try:
            async with self.session(token).request(method, path, **kw) as response:
                body = await response.read()
        except (aiohttp.ClientError, TimeoutError):
            self.errors[op] += 1
            return None
        if self.recording:
            self.latency[op].append(time.perf_counter() - started)
        if response.status >= 400:
            self.errors[f"{op}:{response.status}"] += 1
            return None
        return json.loads(body) if body else {}

    async def metrics(self) -> str:
        async with self.session().get("/metrics") as response:
            return await response.text()

    async def close(self) -> None:
        for session in self.sessions.values():
            await session.close()
        self.sessions.clear()


class SimHooks:
    """The simulation's own views: what it drew for each server, and crashes at
    random. An in-process cloud answers through the service's bench routes
    (bench/fleet_serve.py), a shared one (``--cloud-url``) through its own."""

    def __init__(self, service: Api, cloud_url: str | None) -> None:
        self.service = service
        self.cloud = Api(cloud_url) if cloud_url else None

    async def crash(self, count: int) -> list[list[Any]]:
        """``[instance id, CLOCK_MONOTONIC of the crash]`` of up to ``count`` crashes."""
        if self.cloud is None:
            params = {"count": count}
            return await self.service.call("crash", "POST", "/__bench/crash", params=params) or []
        got = await self.cloud.call("crash", "POST", "/v1/crash-some", params={"count": count})
        return list((got or {}).get("crashed", []))

    async def servers(self) -> list[list[Any]]:
        """``[instance id, port, started, drawn latency, exited]`` per server."""
        if self.cloud is None:
            return await self.service.call("servers", "GET", "/__bench/servers") or []
        got = await self.cloud.call("servers", "GET", "/v1/fates")
        return list((got or {}).get("servers", []))

    async def close(self) -> None:
        if self.cloud is not None:
            await self.cloud.close()


def metric_sum(page: str, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    total = 0.0
    for line in page.splitlines():
        if not line.startswith(name):
            continue
        head, _, value = line.rpartition(" ")
        if head != name and not head.startswith(name + "{"):
            continue
        if all(f'{k}="{v}"' in head for k, v in labels.items()):
            total += float(value)
    return total


async def wait_running(api: Api, count: int, limit: float) -> float:
    """Seconds until no lifecycle intent waits (every start, stop and delete asked
    was carried out: ``chroma_orch_intents_waiting`` 0); ``inf`` past ``limit``. Not
    "every instance running": the simulated fleet keeps crashing, and the restarts
    after a crash (not intents) back off, so some are always starting. ``count`` is
    only reported against."""
    del count
    started = time.monotonic()
    while time.monotonic() - started < limit:
        if _metric(await api.metrics(), "chroma_orch_intents_waiting") == 0:
            return time.monotonic() - started
        await asyncio.sleep(0.25)
    return float("inf")


async def bounded(jobs: list[Any], clients: int) -> list[Any]:
    """Run the coroutines ``jobs`` with at most ``clients`` at once, results in order."""
    gate = asyncio.Semaphore(clients)

    async def one(job: Any) -> Any:
        async with gate:
            return await job

    return await asyncio.gather(*(one(j) for j in jobs))


# --- the phases ---------------------------------------------------------------------


class Fleet:
    def __init__(self, api: Api, args: argparse.Namespace) -> None:
        self.api = api
        self.args = args
        self.sim = SimHooks(api, args.cloud_url)
        self.tokens: list[str] = []
        self.tenant_ids: list[str] = []
        self.instances: dict[str, list[str]] = {}  # token -> instance ids
        self.restarting: set[str] = set()  # instances a client is stopping and starting

    async def tenants(self) -> float:
        async def tenant(n: int) -> tuple[str, str]:
            made = await self.api.call("tenant", "POST", "/v1/tenants", json={"name": f"t{n}"})
            body = {"name": "t"}
            path = f"/v1/tenants/{made['id']}/tokens"
            token: str = (await self.api.call("token", "POST", path, json=body))["token"]
            return made["id"], token

        started = time.monotonic()
        jobs = [tenant(n) for n in range(self.args.tenants)]
        pairs = await bounded(jobs, self.args.clients)
        self.tenant_ids = [t for t, _ in pairs]
        self.tokens = [token for _, token in pairs]
        return time.monotonic() - started

    async def create(self) -> dict[str, Any]:
        per = self.args.instances // self.args.tenants
        self.api.recording = True
        jobs = [
            self.api.call("create", "POST", "/v1/instances", token, json={"name": f"i{n}"})
            for token in self.tokens
            for n in range(per)
        ]
        started = time.monotonic()
        created = await bounded(jobs, self.args.clients)
        elapsed = time.monotonic() - started
        self.api.recording = False
        for token, n in zip([t for t in self.tokens for _ in range(per)], created, strict=True):
            if n is not None:
                self.instances.setdefault(token, []).append(n["instance"]["id"])
        count = sum(len(v) for v in self.instances.values())
        converge = await wait_running(self.api, count, self.args.limit)
        latency = self.api.latency.pop("create", [])
        return {
            "instances": count,
            "seconds": round(elapsed, 1),
            "rate_per_s": round(count / elapsed, 1),
            "latency_ms": summary(latency, 1000, 1),
            "all_running_after_s": round(converge, 1),
            "errors": dict(self.api.errors),
        }

    def pick(self) -> tuple[str, str]:
        token = random.choice(self.tokens)  # noqa: S311
        return token, random.choice(self.instances[token])  # noqa: S311

    async def pages(self, op: str, token: str, limit: int, due: float | None) -> None:
        """The first page of the list, and the next one by its cursor."""
        params = {"limit": limit}
        page = await self.api.call(op, "GET", "/v1/instances", token, due, params=params)
        if page and page.get("next_cursor"):
            params = {"limit": limit, "cursor": page["next_cursor"]}
            await self.api.call(f"{op}_next", "GET", "/v1/instances", token, params=params)

    async def operation(self, due: float | None = None) -> None:
        """One operation of the mix on a random instance, its first request timed from
        ``due`` when given (the paced mix), else from when it is sent."""
        api = self.api
        token, instance = self.pick()
        roll = random.random()  # noqa: S311
        if roll < 0.5:
            await api.call("status", "GET", f"/v1/instances/{instance}", token, due)
        elif roll < 0.65:
            await self.pages("list", token, 5, due)
        elif roll < 0.7:
            await self.pages("list_admin", ADMIN_TOKEN, 50, due)
        elif roll < 0.9:
            self.restarting.add(instance)  # not deleted by another client meanwhile
            try:
                await api.call("stop", "POST", f"/v1/instances/{instance}/stop", token, due)
                await api.call("start", "POST", f"/v1/instances/{instance}/start", token)
            finally:
                self.restarting.discard(instance)
        elif len(self.instances[token]) > 1 and instance not in self.restarting:
            # out of the pool before the first await: no other client picks it now
            # (two clients deleting one instance broke the run's list)
            self.instances[token].remove(instance)
            await api.call("delete", "DELETE", f"/v1/instances/{instance}", token, due)
            made = await api.call(
                "create", "POST", "/v1/instances", token, json={"name": f"r{time.time_ns()}"}
            )
            if made is not None:
                self.instances[token].append(made["instance"]["id"])

    async def client(self, deadline: float) -> None:
        while time.monotonic() < deadline:
            await self.operation()

    async def paced(self) -> dict[str, Any]:
        """The same mix in an open loop: an operation every ``1 / --rate`` seconds
        whatever the ones before it are doing, each timed from when it was due (a late
        send counts: no coordinated omission). The closed loop (``steady``) measures
        what the service can take; its latency is mostly the clients' own queue
        (16 clients ÷ throughput). This measures what a request costs at a given load."""
        rate, seconds = self.args.rate, self.args.seconds
        self.api.latency.clear()
        self.api.errors.clear()
        self.api.recording = True
        running: set[asyncio.Task[None]] = set()
        started = time.perf_counter()
        sent = 0
        while (due := started + sent / rate) < started + seconds:
            await asyncio.sleep(max(due - time.perf_counter(), 0.0))
            task = asyncio.create_task(self.operation(due))
            running.add(task)
            task.add_done_callback(running.discard)
            sent += 1
        await asyncio.gather(*running)
        elapsed = time.perf_counter() - started
        self.api.recording = False
        operations = sum(len(v) for v in self.api.latency.values())
        return {
            "rate_ops_per_s": rate,
            "seconds": round(elapsed, 1),
            "operations_sent": sent,
            "requests_per_s": round(operations / elapsed, 1),
            "latency_ms": {k: summary(v, 1000, 1) for k, v in sorted(self.api.latency.items())},
            "all_requests_ms": summary([x for v in self.api.latency.values() for x in v], 1000, 1),
            "errors": dict(self.api.errors),
        }

    async def steady(self, url: str) -> dict[str, Any]:
        self.api.latency.clear()
        self.api.errors.clear()
        first = await max_seq(self.args.database)
        self.api.recording = True
        deadline = time.monotonic() + self.args.seconds
        started = time.monotonic()
        await asyncio.gather(*(self.client(deadline) for _ in range(self.args.clients)))
        elapsed = time.monotonic() - started
        self.api.recording = False
        exits = await event_counts(self.args.database, first)
        operations = sum(len(v) for v in self.api.latency.values())
        return {
            "clients": self.args.clients,
            "seconds": round(elapsed, 1),
            "throughput_ops_per_s": round(operations / elapsed, 1),
            "latency_ms": {k: summary(v, 1000, 1) for k, v in sorted(self.api.latency.items())},
            "errors": dict(self.api.errors),
            "events_during_mix": exits,
        }


async def max_seq(url: str) -> int:
    seq: int = (await _sql(url, "SELECT coalesce(max(seq), 0) AS s FROM events"))[0]["s"]
    return seq


async def event_counts(url: str, after: int) -> dict[str, int]:
    query = "SELECT type, count(*) AS n FROM events WHERE seq > $1 GROUP BY type ORDER BY 1"
    return {r["type"]: r["n"] for r in await _sql(url, query, after)}


class Events:
    """One admin WebSocket subscriber in this process: (seq, event, instance, monotonic).
    Closed by the service (a slow consumer: this process also runs the load), it
    reconnects with ``since`` = the last seq it handled; ``closes`` counts that."""

    def __init__(self, url: str) -> None:
        self.url = url.replace("http://", "ws://") + "/v1/events"
        self.seen: list[tuple[int, str, str | None, float]] = []
        self.running: dict[str, float] = {}  # instance -> last time it was seen running
        self.stopped: dict[str, float] = {}  # instance -> last time it was seen stopped
        self.closes: list[int | None] = []
        self.last: int | None = None
        self.task: asyncio.Task[None] | None = None
        self.ready = asyncio.Event()

    async def __aenter__(self) -> Events:
        self.task = asyncio.create_task(self.listen())
        await asyncio.wait_for(self.ready.wait(), 120)
        return self

    async def listen(self) -> None:
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        while True:
            # snapshot=none: the whole fleet's list (~7 MB at 10,000) is not needed here;
            # taking it, the 10,000-instance run saw none of its 100 crashes
            url = f"{self.url}?snapshot=none"
            url += "" if self.last is None else f"&since={self.last}"
            try:
                async with websockets.connect(url, additional_headers=headers, max_size=None) as ws:
                    self.ready.set()
                    async for raw in ws:
                        self.handle(json.loads(raw))
                self.closes.append(ws.close_code)
            except (OSError, websockets.ConnectionClosed) as exc:
                self.closes.append(getattr(exc, "code", None))
                await asyncio.sleep(0.2)

    def handle(self, message: dict[str, Any]) -> None:
        if "seq" in message and message["type"] in ("event", "snapshot", "resync"):
            self.last = message["seq"]
        if message["type"] != "event":
            return
        at = time.monotonic()
        instance = message["instance_id"]
        self.seen.append((message["seq"], message["event"], instance, at))
        phase = (message.get("after") or {}).get("phase")
        if phase == "running":
            self.running[instance] = at
        elif phase == "stopped":
            self.stopped[instance] = at

    async def __aexit__(self, *exc: object) -> None:
        assert self.task is not None
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


async def crash_to_noticed(fleet: Fleet, url: str, args: argparse.Namespace) -> dict[str, Any]:
    crashed: dict[str, float] = {}
    async with Events(url) as events:
        for _ in range(args.crashes // 10):
            crashed.update(dict(await fleet.sim.crash(10)))
            await asyncio.sleep(0.5)
        await asyncio.sleep(
            max(5.0, 3 * ReconcilerSettings.model_fields["observe_interval"].default)
        )
    noticed = []
    closes = len(events.closes)
    for instance, at in crashed.items():
        after = [t for _, _, i, t in events.seen if i == instance and t >= at]
        if after:
            noticed.append(min(after) - at)
    interval = ReconcilerSettings.model_fields["observe_interval"].default
    return {
        "crashed": len(crashed),
        "noticed": len(noticed),
        "crash_to_noticed_s": summary(noticed, 1, 3),
        "liveness_interval_s": interval,
        "subscriber_reconnects": closes,
        "definition": "crash (hook's CLOCK_MONOTONIC) to the first event of that instance "
        "on an admin /v1/events subscriber",
    }


_AGAIN = ("instance.waiting_for_capacity", "instance.failed", "instance.crashed")
"""Events after which an instance of the burst is started again, after a backoff."""


def start_floor(starts: list[tuple[float, float]], rate: float, burst: int) -> float:
    """Seconds an ideal control plane takes for these starts: the runtime's run limit
    (``burst`` at once, then ``rate`` per second) issues them in order, each then takes
    its drawn latency; the floor is when the last one answers."""
    latencies = [lat for _, lat in sorted(starts)]
    return max(max(0.0, (n - burst + 1) / rate) + lat for n, lat in enumerate(latencies))


async def burst(fleet: Fleet, events: Events, args: argparse.Namespace) -> dict[str, Any]:
    """Stop ``--burst`` instances, then start them all at once: seconds from the first
    start request until every one of them was seen running (its phase_changed event)."""
    chosen = [(t, i) for t, ids in fleet.instances.items() for i in ids][: args.burst]
    ids = {i for _, i in chosen}
    stopping = time.monotonic()
    stop = [fleet.api.call("b_stop", "POST", f"/v1/instances/{i}/stop", t) for t, i in chosen]
    await bounded(stop, args.clients)
    # every one stopped first (a stop keeps the server's address for the quarantine,
    # 10 s: a start asked before that waits it out, which is not the start's time)
    while time.monotonic() - stopping < args.limit:
        if all(events.stopped.get(i, 0) > stopping for i in ids):
            break
        await asyncio.sleep(0.25)
    stops_s = time.monotonic() - stopping
    started = time.monotonic()
    go = [fleet.api.call("b_start", "POST", f"/v1/instances/{i}/start", t) for t, i in chosen]
    await bounded(go, args.clients)
    requests_s = time.monotonic() - started
    while time.monotonic() - started < args.limit:
        up = [events.running[i] for i in ids if events.running.get(i, 0) > started]
        if len(up) == len(ids):
            break
        await asyncio.sleep(0.25)
    converge = max(up) - started if len(up) == len(ids) else float("inf")
    # a start the simulation failed (its start_failure_rate, 2 %) or a server it
    # crashed is started again after the reconciler's backoff, which no floor has
    retried = {
        i for _, event, i, at in events.seen if i in ids and at > started and event in _AGAIN
    }
    first_try = [events.running[i] - started for i in ids - retried if i in events.running]
    servers = await fleet.sim.servers()
    starts = [(s[2], s[3]) for s in servers if s[0] in ids and s[2] >= started]
    floor = start_floor(starts, args.start_rate, int(args.start_rate))
    return {
        "starts": len(chosen),
        "stops_settled_s": round(stops_s, 2),
        "start_requests_s": round(requests_s, 2),
        "converge_s": round(converge, 2),
        "retried": len(retried),
        "converge_first_try_s": round(max(first_try, default=0.0), 2),
        "sim_floor_s": round(floor, 2),
        "drawn_latency_s": summary([lat for _, lat in starts], 1, 3),
        "server_starts_seen": len(starts),
        "converge_vs_floor": round(converge / floor, 2) if floor else None,
        "first_try_vs_floor": round(max(first_try, default=0.0) / floor, 2) if floor else None,
        "start_rate_limit_per_s": args.start_rate,
        "subscriber_reconnects": len(events.closes),
        "definition": "first start request to the last of these instances' phase_changed "
        "to running on an admin /v1/events subscriber; first_try: of those whose first "
        "start ran (not retried)",
    }


async def fanout(
    fleet: Fleet, url: str, args: argparse.Namespace, subscribers: int
) -> dict[str, Any]:
    """Events per second through ``subscribers`` subscribers while ``--burst`` instances
    are stopped and started again. As bench/ws_fanout.py: one in ten holds the admin
    token (every event), the others tenant tokens round robin (their tenant's
    events)."""
    # snapshot=none: the connect snapshot's seq without the fleet (~7 MB at 10,000 for
    # each admin subscriber); what is measured is the events after it
    ws = url.replace("http://", "ws://") + "/v1/events?snapshot=none"
    tenants = [None if n % 10 == 0 else n % len(fleet.tokens) for n in range(subscribers)]
    tokens = [ADMIN_TOKEN if t is None else fleet.tokens[t] for t in tenants]
    targets = [(ws, {"Authorization": f"Bearer {token}"}) for token in tokens]
    pool = Pool(targets, min(4, subscribers), snapshot=True)
    connect_s = await pool.ready()
    first = await max_seq(args.database)
    chosen = [(t, i) for t, ids in fleet.instances.items() for i in ids][-args.burst :]
    started = time.monotonic()
    for action in ("stop", "start"):
        jobs = [fleet.api.call("f", "POST", f"/v1/instances/{i}/{action}", t) for t, i in chosen]
        await bounded(jobs, args.clients)
    total = sum(len(v) for v in fleet.instances.values())
    await wait_running(fleet.api, total, args.limit)
    last = await max_seq(args.database)
    query = "SELECT tenant_id::text AS t, count(*) AS n FROM events WHERE seq > $1 AND seq <= $2"
    per = {r["t"]: r["n"] for r in await _sql(args.database, query + " GROUP BY 1", first, last)}
    expected = [last - first if t is None else per.get(fleet.tenant_ids[t], 0) for t in tenants]
    received, _ = await pool.finish(expected)
    got = [[(s, at) for s, at in r if first < s <= last] for r in received]
    deliveries = sum(len(r) for r in got)
    ends = [max(at for _, at in r) for r in got if r]
    span = (max(ends) - started) if ends else float("nan")
    admin = [len(r) for r, t in zip(got, tenants, strict=True) if t is None]
    return {
        "subscribers": subscribers,
        "admin_subscribers": len(admin),
        "connect_all_s": round(connect_s, 2),
        "events_committed": last - first,
        "deliveries": deliveries,
        "deliveries_expected": sum(expected),
        "seconds": round(span, 2),
        "events_per_s_admin_subscriber": round(min(admin) / span, 1) if admin else None,
        "deliveries_per_s": round(deliveries / span, 1),
    }


async def reconciler(fleet: Fleet, args: argparse.Namespace) -> dict[str, Any]:
    """An idle window: the reconciler's own statements and passes."""
    before = await fleet.api.metrics()
    await _sql(args.database, "SELECT pg_stat_statements_reset()")
    await asyncio.sleep(args.idle)
    rows = await statements(args.database)
    after = await fleet.api.metrics()
    passes = {
        loop: metric_sum(after, "chroma_orch_reconcile_loop_passes_total", loop=loop)
        - metric_sum(before, "chroma_orch_reconcile_loop_passes_total", loop=loop)
        for loop in _labels(after, "chroma_orch_reconcile_loop_passes_total", "loop")
    }
    seconds = metric_sum(after, "chroma_orch_reconcile_seconds_sum") - metric_sum(
        before, "chroma_orch_reconcile_seconds_sum"
    )
    count = metric_sum(after, "chroma_orch_reconcile_seconds_count") - metric_sum(
        before, "chroma_orch_reconcile_seconds_count"
    )
    calls = sum(r["calls"] for r in rows)
    all_passes = sum(passes.values())
    return {
        "window_s": args.idle,
        "loop_passes": passes,
        "instance_passes": count,
        "instance_pass_mean_ms": round(1000 * seconds / count, 2) if count else None,
        "statements": calls,
        "statements_per_s": round(calls / args.idle, 1),
        "statements_per_loop_pass": round(calls / all_passes, 1) if all_passes else None,
        "db_time_ms": round(sum(r["total_exec_time"] for r in rows), 1),
        "top_statements": top(rows),
        "note": "statements include the bench's two /metrics scrapes (fleet gauges)",
    }


def _labels(page: str, name: str, label: str) -> set[str]:
    return set(re.findall(rf'^{name}{{[^}}]*{label}="([^"]+)"', page, re.MULTILINE))


async def explain(fleet: Fleet, data_dir: Path, args: argparse.Namespace) -> dict[str, Any]:
    """auto_explain on for a short steady mix: the logged plans of the statements that
    touch instances or events, worst first; every Seq Scan on them flagged."""
    logs = sorted((data_dir / "log").glob("*.json"))
    offset = {p: p.stat().st_size for p in logs}
    await _alter_system(args.admin_url, {"auto_explain.log_min_duration": "0"})
    await asyncio.sleep(1)
    deadline = time.monotonic() + min(5.0, args.seconds)
    await asyncio.gather(*(fleet.client(deadline) for _ in range(4)))
    await _alter_system(args.admin_url, {"auto_explain.log_min_duration": "-1"})
    plans: dict[str, dict[str, Any]] = {}
    for path in sorted((data_dir / "log").glob("*.json")):
        with path.open() as log:
            log.seek(offset.get(path, 0))
            for line in log:
                _plan(line, plans)
    hot = sorted(plans.values(), key=lambda p: -p["total_ms"])
    flagged = [p for p in hot if p["seq_scans"]]
    return {
        "statements_explained": len(hot),
        "verdict": "seq scan on instances/events" if flagged else "no seq scan on instances/events",
        "flagged": flagged[:10],
        "hot": hot[:8],
    }


def _plan(line: str, plans: dict[str, dict[str, Any]]) -> None:
    try:
        entry = json.loads(line)
    except json.JSONDecodeError:
        return
    message = entry.get("message", "")
    if "plan:" not in message:
        return
    body = json.loads(message.split("plan:", 1)[1])
    text = " ".join(body.get("Query Text", "").split())
    if not any(re.search(rf"\b{t}\b", text) for t in HOT_TABLES):
        return
    scans: list[str] = []
    _walk(body["Plan"], scans)
    key = text[:400]
    seen = plans.setdefault(
        key,
        {
            "query": text[:300],
            "calls": 0,
            "total_ms": 0.0,
            "max_ms": 0.0,
            "seq_scans": [],
            "plan": "",
        },
    )
    ms = float(body["Plan"].get("Actual Total Time", 0.0))
    seen["calls"] += 1
    seen["total_ms"] = round(seen["total_ms"] + ms, 3)
    if ms >= seen["max_ms"]:
        seen["max_ms"] = ms
        seen["plan"] = _brief(body["Plan"])
    seen["seq_scans"] = sorted(set(seen["seq_scans"]) | set(scans))


def _walk(node: dict[str, Any], scans: list[str]) -> None:
    if node.get("Node Type") == "Seq Scan" and node.get("Relation Name") in HOT_TABLES:
        scans.append(node["Relation Name"])
    for child in node.get("Plans", []):
        _walk(child, scans)


def _brief(node: dict[str, Any], depth: int = 0) -> str:
    """One line per plan node: type, relation/index, actual rows, buffers."""
    name = node.get("Node Type", "?")
    what = node.get("Relation Name") or node.get("Index Name") or ""
    rows = node.get("Actual Rows")
    hit = node.get("Shared Hit Blocks", 0) + node.get("Shared Read Blocks", 0)
    line = f"{'  ' * depth}{name} {what} rows={rows} buffers={hit}".rstrip()
    return "\n".join([line] + [_brief(c, depth + 1) for c in node.get("Plans", [])])


async def sizes(args: argparse.Namespace, instances: int) -> dict[str, Any]:
    row = (
        await _sql(
            args.database,
            "SELECT pg_database_size(current_database()) AS db,"
            " pg_total_relation_size('instances') AS instances,"
            " pg_total_relation_size('events') AS events,"
            " (SELECT count(*) FROM events) AS event_rows",
        )
    )[0]
    return {
        "database_bytes": row["db"],
        "database_bytes_per_instance": round(row["db"] / instances),
        "instances_table_bytes_per_instance": round(row["instances"] / instances),
        "events_table_bytes_per_instance": round(row["events"] / instances),
        "event_rows": row["event_rows"],
    }


def rss(service: Service) -> int:
    assert service.process is not None
    return int(psutil.Process(service.process.pid).memory_info().rss)


async def restart(
    service: Service, api: Api, count: int, args: argparse.Namespace
) -> dict[str, Any]:
    await api.close()
    killed = time.monotonic()
    await service.kill9()
    await service.start(timeout=120)
    ready = time.monotonic() - killed
    converge = await wait_running(api, count, args.limit)
    running = float("inf")
    while time.monotonic() - killed < args.limit:
        page = await api.metrics()
        if metric_sum(page, "chroma_orch_instances", phase="running") >= 0.99 * count:
            running = time.monotonic() - killed
            break
        await asyncio.sleep(0.25)
    return {
        "ready_s": round(ready, 2),
        "no_intent_waiting_s": round(ready + converge, 2),
        "running_99_percent_s": round(running, 2),
        "rss_after_restart_mb": round(rss(service) / 2**20, 1),
        "definition": "kill -9 to /readyz 200; to no intent waiting; to 99 % of the "
        "instances running again "
        + (
            "(the shared cloud kept the servers: the new process adopts them)"
            if args.cloud_url
            else "(the in-process cloud died with the process, so the reconciler starts "
            "every server again through the start-rate limit)"
        ),
    }


async def run(args: argparse.Namespace, base: Path, cluster: EmbeddedPostgres) -> dict[str, Any]:
    args.admin_url = cluster.admin_url
    args.database = await fresh_database(cluster.admin_url)
    await _sql(args.database, "CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    services = [make_service(args.database, base, n, args) for n in range(args.replicas)]
    for service in services:
        await service.start(timeout=120)
    api = Api(services[0].url)
    fleet = Fleet(api, args)
    out: dict[str, Any] = {}

    async def phase(name: str, work: Any) -> None:
        """One measure; a failure is recorded and the next measure runs. Each result
        also goes to stderr at once, so that a run cut short keeps what it measured."""
        try:
            out[name] = await work
        except Exception as exc:  # noqa: BLE001 (the report says which measure failed)
            out[name] = {"error": repr(exc)[:500]}
        print(json.dumps({name: out[name]}, default=str), file=sys.stderr, flush=True)

    def count() -> int:
        return sum(len(v) for v in fleet.instances.values())

    try:
        await phase("tenants_s", fleet.tenants())
        await phase("create", fleet.create())
        out["rss_mb_after_create"] = [round(rss(s) / 2**20, 1) for s in services]
        await phase("reconciler", reconciler(fleet, args))
        await phase("api", fleet.steady(services[0].url))
        await phase("api_paced", fleet.paced())
        await phase("explain", explain(fleet, cluster.data_dir, args))
        await wait_running(api, count(), args.limit)
        await phase("crash", crash_to_noticed(fleet, services[0].url, args))
        await wait_running(api, count(), args.limit)
        async with Events(services[0].url) as events:
            await phase("burst", burst(fleet, events, args))
        out["events"] = []
        for n in (1, 500):
            await phase("fanout", fanout(fleet, services[0].url, args, n))
            out["events"].append(out.pop("fanout"))
        out["memory_rss_mb"] = [round(rss(s) / 2**20, 1) for s in services]
        if getattr(args, "cloud_pid", None):
            cloud_rss = psutil.Process(args.cloud_pid).memory_info().rss
            out["cloud_rss_mb"] = round(cloud_rss / 2**20, 1)
        await phase("postgres", sizes(args, count()))
        await phase("restart", restart(services[0], api, count(), args))
    finally:
        await api.close()
        await fleet.sim.close()
        for service in services:
            await service.stop()
    return out


def main(args: argparse.Namespace) -> dict[str, Any]:
    if args.quick:
        args.instances, args.tenants = 1000, 100
        args.burst = min(args.burst, 500)
    if args.replicas > 1 and not (args.cloud_url or args.cloud):
        raise SystemExit(
            "--replicas 2 needs --cloud-url: the simulated cloud lives in each service's "
            "process, so two replicas would not share servers (CHROMA_ORCH_SIM__CLOUD_URL)"
        )
    load_before = os.getloadavg()
    started = time.monotonic()
    with workdir() as base, postgres(base) as cluster, sim_cloud(args):
        out = asyncio.run(run(args, base, cluster))
    return {
        "benchmark": "fleet",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "instances": args.instances,
        "tenants": args.tenants,
        "replicas": args.replicas,
        "sim": {
            "time_scale": args.time_scale,
            "crash_rate_per_server_hour": args.crash_rate,
            "retirement_rate_per_server_hour": args.retirement_rate,
            "start_rate_limit_per_s": args.start_rate,
            "cloud": "a process of its own" if args.cloud_url else "in each service's process",
        },
        "cpus": os.cpu_count(),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "wall_s": round(time.monotonic() - started, 1),
        **out,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="1,000 instances, 100 tenants")
    parser.add_argument("--instances", type=int, default=10_000)
    parser.add_argument("--tenants", type=int, default=1_000)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=20, help="steady mix")
    parser.add_argument("--rate", type=float, default=50, help="paced mix, operations/s")
    parser.add_argument("--idle", type=float, default=10, help="reconciler window")
    parser.add_argument("--burst", type=int, default=1_000)
    parser.add_argument("--crashes", type=int, default=100)
    parser.add_argument("--time-scale", type=float, default=0.01)
    parser.add_argument("--crash-rate", type=float, default=0.005, help="per server-hour")
    parser.add_argument("--retirement-rate", type=float, default=0.005, help="per server-hour")
    parser.add_argument("--start-rate", type=float, default=100, help="sim run calls/s (and burst)")
    parser.add_argument("--limit", type=float, default=900, help="longest wait to converge (s)")
    parser.add_argument("--replicas", type=int, default=1)
    parser.add_argument("--cloud-url", default=None, help="a shared simulated cloud (replicas > 1)")
    parser.add_argument(
        "--cloud", action="store_true", help="start a shared simulated cloud for the run"
    )
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    result = main(parser.parse_args())
    text = json.dumps(result, indent=2, default=str)
    if parser.parse_args().out:
        parser.parse_args().out.write_text(text + "\n")
    print(text)
