"""The data plane's cost: one Chroma workload direct, through the built-in proxy and
through Nginx (deploy/nginx.conf, with connection pools for the local runtime's
ports: ``--tenant-ports``), in one run on one machine. Prints JSON.

    python bench/proxy.py [--ops 400] [--workers 8] [--seconds 5] [--dim 128] [--batch 16]

Workload, per path, with the real ``chromadb.HttpClient`` (explicit embeddings):
alternately ``add`` a batch of ``--batch`` vectors and ``query`` 5 neighbours.
latency: one client, ``--ops`` sequential operations (paths interleaved in
rounds of 50 so drift hits all alike); p50/p99 per path.
throughput: ``--workers`` clients in threads for ``--seconds``; operations/s.
Targets: Nginx p50 <= 1.15x direct; built-in proxy p50 <= 1.5x direct. The
mixed p50 falls between the add and query modes, so p50 per kind is given too.
``sniffio_installed``: without it httpcore retries a failed ``import sniffio``
several times per request, which costs the built-in proxy ~0.5 ms a request.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import chromadb
from chromadb.config import Settings

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import fresh_database, postgres, workdir  # noqa: E402
from chroma_orch.dataplane.nginx import parse_ports, render  # noqa: E402
from tests.e2e.service import Service, free_port, kill_chroma_processes, port_is_open  # noqa: E402
from tests.helpers import create_tenant  # noqa: E402

PATHS = ("direct", "builtin", "nginx")
ROUND = 50


class Workload:
    """One client on one path, alternating add and query."""

    def __init__(self, base: str, token: str, collection: str, dim: int, batch: int) -> None:
        headers = {"Authorization": f"Bearer {token}"}
        settings = Settings(anonymized_telemetry=False)
        client = chromadb.HttpClient(host=base, headers=headers, settings=settings)
        self.collection = client.get_or_create_collection(collection)
        self.dim, self.batch = dim, batch
        self.rng = random.Random(7)
        self.n = 0

    def _vectors(self, count: int) -> list[Sequence[float]]:
        return [[self.rng.random() for _ in range(self.dim)] for _ in range(count)]

    def op(self) -> tuple[str, float]:
        """Run the next operation; its kind and duration in seconds (payload built first)."""
        self.n += 1
        kind = "add" if self.n % 2 else "query"
        if kind == "add":
            ids = [uuid.uuid4().hex for _ in range(self.batch)]
            vectors = self._vectors(self.batch)
            started = time.perf_counter()
            self.collection.add(ids=ids, embeddings=vectors)
        else:
            query = self._vectors(1)
            started = time.perf_counter()
            self.collection.query(query_embeddings=query, n_results=5)
        return kind, time.perf_counter() - started


def latency(bases: dict[str, str], token: str, ops: int, dim: int, batch: int) -> dict[str, Any]:
    loads = {p: Workload(bases[p], token, f"lat_{p}", dim, batch) for p in PATHS}
    for load in loads.values():  # warm up connections and the collections
        for _ in range(20):
            load.op()
    samples: dict[str, list[tuple[str, float]]] = {p: [] for p in PATHS}
    for _ in range(max(ops // ROUND, 1)):
        for path in PATHS:
            samples[path] += [loads[path].op() for _ in range(ROUND)]
    return {
        p: {
            **_summary([d for _, d in s]),
            **{
                f"{kind}_p50_ms": _summary([d for k, d in s if k == kind])["p50_ms"]
                for kind in ("add", "query")
            },
        }
        for p, s in samples.items()
    }


def throughput(
    base: str, token: str, name: str, workers: int, seconds: float, dim: int, batch: int
) -> float:
    loads = [Workload(base, token, f"tp_{name}_{i}", dim, batch) for i in range(workers)]
    counts = [0] * workers
    deadline = time.monotonic() + seconds

    def run(i: int) -> None:
        while time.monotonic() < deadline:
            loads[i].op()
            counts[i] += 1

    threads = [threading.Thread(target=run, args=(i,)) for i in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return round(sum(counts) / seconds, 1)


def _summary(samples: list[float]) -> dict[str, Any]:
    ordered = sorted(samples)
    return {
        "p50_ms": round(statistics.median(ordered) * 1000, 3),
        "p99_ms": round(ordered[int(0.99 * (len(ordered) - 1))] * 1000, 3),
        "n": len(ordered),
    }


async def start_nginx(
    base: Path, backend_ports: Sequence[int], tenant_ports: str
) -> tuple[asyncio.subprocess.Process, int]:
    """Nginx on deploy/nginx.conf in front of the replicas, with connection pools
    for the local runtime's ``tenant_ports``."""
    prefix = base / "nginx"
    prefix.mkdir()
    prefix.chmod(0o755)
    port = free_port()
    config = render(
        prefix,
        backends=[f"127.0.0.1:{p}" for p in backend_ports],
        listen=[f"127.0.0.1:{port}"],
        tenant_ports=parse_ports(tenant_ports),
    )
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    process = await asyncio.create_subprocess_exec(
        nginx, "-c", str(config), "-p", f"{prefix}/", "-g", "daemon off;",
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    for _ in range(200):
        if port_is_open("127.0.0.1", port):
            return process, port
        await asyncio.sleep(0.05)
    raise RuntimeError("nginx did not start")


async def measure(service: Service, nginx_port: int, args: argparse.Namespace) -> dict[str, Any]:
    async with service.client() as admin:
        _, token = await create_tenant(admin, "bench")
    async with service.client(token) as http:
        created = await http.post("/v1/instances", json={"name": "bench"})
        instance_id = created.json()["instance"]["id"]
        body = (await http.get(f"/v1/instances/{instance_id}/wait", params={"timeout": 60})).json()
    if body["phase"] != "running":
        raise RuntimeError(f"instance not running: {body}")
    bases = {
        "direct": body["endpoint"]["url"],
        "builtin": body["url"],
        "nginx": f"http://127.0.0.1:{nginx_port}/i/{instance_id}",
    }
    lat = await asyncio.to_thread(latency, bases, token, args.ops, args.dim, args.batch)
    tput = {}
    for path in PATHS:
        tput[path] = await asyncio.to_thread(
            throughput, bases[path], token, path, args.workers, args.seconds, args.dim, args.batch
        )
    return {"latency": lat, "throughput_ops_s": tput}


async def main(args: argparse.Namespace) -> dict[str, Any]:
    with workdir() as base, postgres(base) as admin_url:
        database_url = await fresh_database(admin_url)
        service = Service(database_url, base / "data", CHROMA_ORCH_LOG_LEVEL="WARNING")
        await service.start()
        ports = service.env["CHROMA_ORCH_LOCAL__PORT_RANGE"]
        nginx, nginx_port = await start_nginx(base, [service.port], ports)
        try:
            result = await measure(service, nginx_port, args)
        finally:
            nginx.send_signal(signal.SIGTERM)
            await nginx.wait()
            await service.stop()
            kill_chroma_processes(base / "data")
    lat, tput = result["latency"], result["throughput_ops_s"]
    direct_p50 = lat["direct"]["p50_ms"]
    ratios = {
        p: {
            "p50": round(lat[p]["p50_ms"] / direct_p50, 3),
            "p99": round(lat[p]["p99_ms"] / lat["direct"]["p99_ms"], 3),
            "throughput": round(tput[p] / tput["direct"], 3),
            "add_p50": round(lat[p]["add_p50_ms"] / lat["direct"]["add_p50_ms"], 3),
            "query_p50": round(lat[p]["query_p50_ms"] / lat["direct"]["query_p50_ms"], 3),
        }
        for p in ("builtin", "nginx")
    }
    return {
        "benchmark": "proxy",
        "workload": f"chromadb.HttpClient: add {args.batch}x{args.dim} / query k=5, alternating",
        "cpus": os.cpu_count(),
        "sequential_ops_per_path": lat["direct"]["n"],
        "throughput_workers": args.workers,
        "throughput_seconds": args.seconds,
        **{p: {**lat[p], "throughput_ops_s": tput[p]} for p in PATHS},
        "ratio_to_direct": ratios,
        "targets": {
            "nginx_p50_le_1.15x": ratios["nginx"]["p50"] <= 1.15,
            "builtin_p50_le_1.5x": ratios["builtin"]["p50"] <= 1.5,
            "nginx_query_p50_le_1.15x": ratios["nginx"]["query_p50"] <= 1.15,
            "builtin_query_p50_le_1.5x": ratios["builtin"]["query_p50"] <= 1.5,
        },
        "sniffio_installed": importlib.util.find_spec("sniffio") is not None,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ops", type=int, default=400)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--batch", type=int, default=16)
    print(json.dumps(asyncio.run(main(parser.parse_args())), indent=2))
