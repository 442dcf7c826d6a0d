"""The floor under ``bench/api_load.py``: its requests' statements, straight to PostgreSQL.

``capture`` runs the service once more (``bench/statement_capture.py``, same
settings, same database cluster) and drives a few launch → status → stop →
delete cycles one request at a time, recording every statement each request
sent: BEGIN/COMMIT, the SQL text and its bound arguments. The last recorded cycle
is the template; comparing it with the one before tells which arguments belong to
the cycle (instance and intent ids, the name, the request fingerprint, the JSON
that carries them) and which are the tenant's (its id, lock keys).

``replay`` is a minimal asyncpg client: K clients (the load's K), each on its own
connection, repeat the template's four operations with fresh values for the
cycle's own arguments, sending exactly those statements in that order (asyncpg's
statement cache prepares them once, as the service's does). What it measures is
what PostgreSQL, the network and asyncpg cost for the same work: the part of the
API's latency no code of ours can remove. It runs without the reconciler (the
floor is the requests' statements alone), so the rows its deletes leave are not
purged meanwhile.
"""

from __future__ import annotations

import asyncio
import os
import pickle
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from bench.harness import cpu_seconds, cpu_seconds_at, cpu_use, summary
from bench.statement_capture import Captured
from chroma_orch.db.listener import asyncpg_dsn
from tests.e2e.service import Service
from tests.helpers import create_tenant

OPERATIONS = ("launch", "status", "stop", "delete")
CHECK = (
    "SELECT count(*) AS launched, count(*) FILTER (WHERE desired_state = 'deleted'"
    " AND generation = 3) AS deleted FROM instances WHERE name LIKE 'floor-%'"
)
CAPTURE_SCRIPT = Path(__file__).with_name("statement_capture.py")


@dataclass
class Template:
    """One cycle's statements by operation, and the arguments that are the cycle's own."""

    ops: dict[str, list[Captured]]
    own: set[Any]  # UUIDs and plain strings that differ from the previous cycle

    def fresh(self) -> dict[Any, Any]:
        """New values for a cycle: UUIDs stay UUIDs, fingerprints stay hex."""
        out: dict[Any, Any] = {}
        for value in self.own:
            if isinstance(value, uuid.UUID):
                out[value] = uuid.uuid4()
                out[str(value)] = str(out[value])
            elif _is_hex(value):
                out[value] = os.urandom(len(value) // 2).hex()
            else:
                out[value] = f"floor-{uuid.uuid4().hex[:12]}"
        return out


def _is_hex(value: str) -> bool:
    return len(value) >= 32 and all(c in "0123456789abcdef" for c in value)


def _is_json(value: object) -> bool:
    return isinstance(value, str) and value[:1] in ("[", "{")


def substitute(value: Any, fresh: dict[Any, Any]) -> Any:
    if isinstance(value, (uuid.UUID, str)) and value in fresh:
        return fresh[value]
    if _is_json(value):
        for old, new in fresh.items():
            if isinstance(old, str) and old in value:
                value = value.replace(old, new)
    return value


async def capture(database: str, directory: Path, env: dict[str, str]) -> Template:
    """Record the statements of two cycles (after two unrecorded ones) and template the last."""
    path = directory / "statements.pickle"
    service = Service(database, directory / "capture-data", CO_BENCH_CAPTURE=str(path), **env)
    service.command = (str(CAPTURE_SCRIPT),)
    await service.start()
    try:
        async with service.client() as admin:
            _, token = await create_tenant(admin, "floor")
        headers = {"Authorization": f"Bearer {token}"}
        async with aiohttp.ClientSession(service.url, headers=headers) as http:
            for cycle in range(4):
                await _tagged_cycle(http, f"capture-{cycle}", str(cycle) if cycle >= 2 else None)
    finally:
        await service.stop()
    cycles: dict[str, dict[str, list[Captured]]] = defaultdict(lambda: defaultdict(list))
    with path.open("rb") as source:  # noqa: ASYNC230 (set-up, before timing)
        while True:
            try:
                item: Captured = pickle.load(source)  # noqa: S301 (our own file)
            except EOFError:
                break
            tag, op = item.op.split(":")
            cycles[tag][op].append(item)
    before, last = (dict(cycles[c]) for c in ("2", "3"))
    return Template(last, _values(last) - _values(before))


def _values(ops: dict[str, list[Captured]]) -> set[Any]:
    return {
        a
        for items in ops.values()
        for item in items
        for a in (item.args if item.kind != "many" else [x for row in item.args for x in row])
        if isinstance(a, uuid.UUID) or (isinstance(a, str) and not _is_json(a))
    }


async def _tagged_cycle(http: aiohttp.ClientSession, name: str, tag: str | None) -> None:
    def h(op: str) -> dict[str, str]:
        return {"x-bench-op": f"{tag}:{op}"} if tag else {}

    async with http.post("/v1/instances", json={"name": name}, headers=h("launch")) as r:
        instance = (await r.json())["instance"]["id"]
    for op, method, path in (
        ("status", "GET", f"/v1/instances/{instance}"),
        ("stop", "POST", f"/v1/instances/{instance}/stop"),
        ("delete", "DELETE", f"/v1/instances/{instance}"),
    ):
        async with http.request(method, path, headers=h(op)) as r:
            r.raise_for_status()


class Replay:
    """K clients, one connection each, replaying the template's cycle until ``deadline``."""

    def __init__(self, template: Template, measure_from: float, deadline: float) -> None:
        self.template = template
        self.measure_from = measure_from
        self.deadline = deadline
        self.latency: dict[str, list[float]] = defaultdict(list)
        self.errors: dict[str, int] = defaultdict(int)

    async def client(self, dsn: str) -> None:
        con = await asyncpg.connect(dsn)
        try:
            while time.monotonic() < self.deadline:
                fresh = self.template.fresh()
                for op in OPERATIONS:
                    await self.operation(con, op, fresh)
        finally:
            await con.close()

    async def operation(self, con: asyncpg.Connection, op: str, fresh: dict[Any, Any]) -> None:
        started = time.perf_counter()
        try:
            for item in self.template.ops[op]:
                if item.kind == "simple":
                    await con.execute(item.query)
                elif item.kind == "many":
                    rows = [[substitute(a, fresh) for a in row] for row in item.args]
                    await con.executemany(item.query, rows)
                else:
                    await con.fetch(item.query, *(substitute(a, fresh) for a in item.args))
        except asyncpg.PostgresError as exc:
            self.errors[f"{op}:{type(exc).__name__}"] += 1
            if con.is_in_transaction():
                await con.execute("ROLLBACK")
            return
        if time.monotonic() - (time.perf_counter() - started) >= self.measure_from:
            self.latency[op].append(time.perf_counter() - started)


async def replay(
    database: str, template: Template, clients: int, seconds: float, warmup: float
) -> dict[str, Any]:
    measure_from = time.monotonic() + warmup
    load = Replay(template, measure_from, measure_from + seconds)
    dsn = asyncpg_dsn(database)
    cpu_from = asyncio.create_task(cpu_seconds_at(measure_from))
    await asyncio.gather(*(load.client(dsn) for _ in range(clients)))
    elapsed = time.monotonic() - measure_from
    used = cpu_seconds() - await cpu_from
    operations = sum(len(v) for v in load.latency.values())
    con = await asyncpg.connect(dsn)
    try:  # the replayed cycles did the work: every instance they launched is deleted
        replayed = await con.fetchrow(CHECK)
    finally:
        await con.close()
    return {
        "clients": clients,
        "seconds": round(elapsed, 2),
        "statements_per_cycle": {op: len(template.ops[op]) for op in OPERATIONS},
        "operations": operations,
        "throughput_ops_per_s": round(operations / elapsed, 1),
        "client_cpu": cpu_use(used, elapsed, operations),
        "latency_ms": {op: summary(v, 1000, 2) for op, v in sorted(load.latency.items())},
        "latency_ms_all": summary([x for v in load.latency.values() for x in v], 1000, 2),
        "errors": dict(load.errors),
        "error_count": sum(load.errors.values()),
        "instances_launched": replayed["launched"],
        "instances_deleted": replayed["deleted"],
    }
