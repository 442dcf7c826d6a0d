"""Tenants and the control plane going away: a tenant's Chroma client queries its
server through Nginx (deploy/nginx.conf, in front of two replicas on one
PostgreSQL) and, for comparison, through replica 0's built-in proxy, while replica
0 is killed with kill -9 (and started again), then both are restarted one after
the other. Prints JSON.

    python bench/control_plane_restart.py [--down 6.5]

Per path and per phase (steady, kill -9, rolling restart): requests, failed
requests (goal for Nginx: 0) with their exception types, and the successful
queries' latency p50/p99/max; ``added_p50_ms``: a phase's p50 minus the steady
p50 (``None`` when nothing succeeded). ``--down``: seconds a replica stays down (past
Nginx's 5 s auth cache by default, so that the replicas are asked again).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import chromadb
from chromadb.config import Settings

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import fresh_database, postgres, workdir  # noqa: E402
from bench.proxy import start_nginx  # noqa: E402
from tests.chaos.cluster import ReplicaSet  # noqa: E402
from tests.helpers import create_tenant  # noqa: E402

VECTORS: list[Sequence[float]] = [[1.0, 0.0], [0.0, 1.0]]
QUERY: list[Sequence[float]] = [[0.9, 0.1]]


@dataclass
class Poller:
    """One client querying through ``base`` in a thread: (time, seconds, error)."""

    base: str
    token: str
    samples: list[tuple[float, float, str | None]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        headers = {"Authorization": f"Bearer {self.token}"}
        settings = Settings(anonymized_telemetry=False)
        client = chromadb.HttpClient(host=self.base, headers=headers, settings=settings)
        docs = client.get_or_create_collection("docs")
        docs.upsert(ids=["a", "b"], embeddings=VECTORS)
        while not self.stop.wait(0.02):
            started = time.perf_counter()
            error = None
            try:
                docs.query(query_embeddings=QUERY, n_results=1)
            except Exception as exc:  # whatever the client makes of a failure
                error = type(exc).__name__
            self.samples.append((time.monotonic(), time.perf_counter() - started, error))

    def phase(self, began: float, ended: float) -> dict[str, Any]:
        inside = [s for s in self.samples if began <= s[0] < ended]
        times = sorted(d for _, d, e in inside if e is None)
        failed = [e for *_, e in inside if e is not None]
        return {
            "seconds": round(ended - began, 1),
            "requests": len(inside),
            "failed": len(failed),
            "errors": sorted(set(failed)),
            "p50_ms": _ms(statistics.median(times)) if times else None,
            "p99_ms": _ms(times[int(0.99 * (len(times) - 1))]) if times else None,
            "max_ms": _ms(times[-1]) if times else None,
        }


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


async def _instance(replicas: ReplicaSet) -> tuple[str, str, str]:
    """A tenant's running instance: (id, token, built-in proxy URL on replica 0)."""
    async with replicas[0].client() as admin:
        _, token = await create_tenant(admin, "bench")
    async with replicas[0].client(token) as http:
        created = await http.post("/v1/instances", json={"name": "bench"})
        instance_id = created.json()["instance"]["id"]
        body = (await http.get(f"/v1/instances/{instance_id}/wait", params={"timeout": 60})).json()
    if body["phase"] != "running":
        raise RuntimeError(f"instance not running: {body}")
    return instance_id, token, f"{replicas[0].url}/i/{instance_id}"


async def _chaos(replicas: ReplicaSet, down: float) -> dict[str, tuple[float, float]]:
    """Steady, then kill -9 of replica 0, then a rolling restart: each phase's span."""
    phases: dict[str, tuple[float, float]] = {}
    began = time.monotonic()
    await asyncio.sleep(down)
    phases["steady"] = (began, time.monotonic())
    began = time.monotonic()
    await replicas[0].kill9()
    await asyncio.sleep(down)
    await replicas[0].start(timeout=60)
    phases["kill_9"] = (began, time.monotonic())
    began = time.monotonic()
    for replica in replicas.replicas:
        await replica.stop()
        await asyncio.sleep(down)
        await replica.start(timeout=60)
    await asyncio.sleep(1)
    phases["rolling_restart"] = (began, time.monotonic())
    return phases


async def measure(replicas: ReplicaSet, nginx_port: int, down: float) -> dict[str, Any]:
    instance_id, token, builtin = await _instance(replicas)
    pollers = {
        "nginx": Poller(f"http://127.0.0.1:{nginx_port}/i/{instance_id}", token),
        "builtin_on_replica_0": Poller(builtin, token),
    }
    threads = [threading.Thread(target=p.run, daemon=True) for p in pollers.values()]
    for thread in threads:
        thread.start()
    try:
        phases = await _chaos(replicas, down)
    finally:
        for poller in pollers.values():
            poller.stop.set()
        for thread in threads:
            await asyncio.to_thread(thread.join, 30)
    result: dict[str, Any] = {}
    for name, poller in pollers.items():
        per = {phase: poller.phase(*span) for phase, span in phases.items()}
        steady = per["steady"]["p50_ms"]
        for phase in per.values():
            p50 = phase["p50_ms"]
            phase["added_p50_ms"] = (
                None if p50 is None or steady is None else round(p50 - steady, 3)
            )
        result[name] = per
    return result


async def main(args: argparse.Namespace) -> dict[str, Any]:
    with workdir() as base, postgres(base) as admin_url:
        database_url = await fresh_database(admin_url)
        replicas = ReplicaSet(database_url, base / "data", 2, CHROMA_ORCH_LOG_LEVEL="WARNING")
        await replicas.start()
        ports = replicas[0].env["CHROMA_ORCH_LOCAL__PORT_RANGE"]
        nginx, nginx_port = await start_nginx(base, [r.port for r in replicas.replicas], ports)
        try:
            result = await measure(replicas, nginx_port, args.down)
        finally:
            nginx.terminate()
            await nginx.wait()
            await replicas.stop()
    failed = sum(phase["failed"] for phase in result["nginx"].values())
    return {
        "benchmark": "control_plane_restart",
        "cpus": os.cpu_count(),
        "replicas": 2,
        "down_seconds": args.down,
        "paths": result,
        "targets": {"nginx_failed_requests_0": failed == 0},
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--down", type=float, default=6.5)
    print(json.dumps(asyncio.run(main(parser.parse_args())), indent=2))
