"""What tenants see while other servers boot: their query latency, per servers'
niceness (``CHROMA_ORCH_LOCAL__NICENESS``), in one run on one machine. Prints JSON.

    python bench/tenant_latency.py [--niceness 0,10] [--steady 3] [--boots 4]
        [--rounds 3] [--seconds 6] [--think 0.02] [--points 2000] [--dim 128] [--passes 1]

For each niceness a real service runs with it (so its servers, the tenants' as well
as the booting ones, run that much below the service and its database). ``--steady``
tenants' instances each hold a collection of ``--points`` vectors; one client per
instance queries it (10 nearest, raw POST to the query endpoint) in a closed loop
with ``--think`` seconds between queries, alternately straight to the server
(``direct``: the server's share) and through the built-in proxy (``proxy``: what a
tenant sees end to end). Each round has two phases of ``--seconds``:

floor: the machine otherwise idle (measured beside the storm, same service, same servers)
storm: launch storms through the API, back to back: ``--boots`` instances created at
       once, waited for until running, deleted and waited for until gone (the
       control plane is busy too: that is what a burst of starts costs the tenants)

Reported per niceness: query latency percentiles (ms) per phase and path, the storm
to floor ratios, and launch-to-running seconds of the booting instances. ``--passes``
repeats everything in reversed niceness order, so drift (other load on the machine)
hits every setting alike; ``loadavg`` shows how busy the machine was around the run.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import random
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import chromadb
import psutil
from chromadb.config import Settings

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import (  # noqa: E402
    default_reconciler_timing,
    fresh_database,
    percentile,
    postgres,
    summary,
    workdir,
)
from bench.lifecycle import ours_round  # noqa: E402
from chroma_orch.runtimes.chroma_launch import read_lock  # noqa: E402
from tests.e2e.service import Service, kill_chroma_processes  # noqa: E402
from tests.helpers import create_tenant  # noqa: E402

PATHS = ("direct", "proxy")
PHASES = ("floor", "storm")
QUERY = "/api/v2/tenants/default_tenant/databases/default_database/collections/{}/query"


@dataclass(frozen=True)
class Steady:
    """One tenant's instance that serves queries throughout."""

    instance_id: str
    port: int
    pid: int
    collection_id: str


@dataclass
class Options:
    steady: int
    boots: int
    rounds: int
    seconds: float
    think: float
    points: int
    dim: int


def stats(samples: list[float]) -> dict[str, Any]:
    """``summary`` in ms, with p95 too."""
    result = summary(samples, scale=1000, digits=2)
    if samples:
        result["p95"] = round(percentile(samples, 0.95) * 1000, 2)
    return result


def load_collection(port: int, points: int, dim: int) -> str:
    """A collection of ``points`` random vectors on the server at ``port``; its id."""
    client = chromadb.HttpClient(
        host="127.0.0.1", port=port, settings=Settings(anonymized_telemetry=False)
    )
    rng = random.Random(port)
    collection = client.get_or_create_collection("docs")
    for start in range(0, points, 500):
        ids = [str(n) for n in range(start, min(points, start + 500))]
        vectors = [[rng.random() for _ in range(dim)] for _ in ids]
        collection.add(ids=ids, embeddings=vectors)  # type: ignore[arg-type]
    return str(collection.id)


async def start_steady(service: Service, token: str, options: Options) -> list[Steady]:
    """``options.steady`` instances launched, running and loaded."""
    steady = []
    async with service.client(token) as http:
        for n in range(options.steady):
            created = await http.post("/v1/instances", json={"name": f"steady-{n}"})
            instance_id = created.json()["instance"]["id"]
            wait = await http.get(f"/v1/instances/{instance_id}/wait", params={"phase": "running"})
            assert wait.json()["phase"] == "running", wait.text
            lock = read_lock(service.data_dir / "instances" / f"{instance_id}.lock")
            assert lock is not None
            collection_id = await asyncio.to_thread(
                load_collection, lock.port, options.points, options.dim
            )
            steady.append(Steady(instance_id, lock.port, lock.pid, collection_id))
    return steady


async def query_loop(
    http: aiohttp.ClientSession,
    urls: dict[str, str],
    options: Options,
    stop: asyncio.Event,
    samples: dict[str, list[float]],
) -> None:
    """Query alternately through each of ``urls`` until ``stop``; latencies into ``samples``."""
    rng = random.Random()
    for path in itertools.cycle(PATHS):
        if stop.is_set():
            return
        vector = [rng.random() for _ in range(options.dim)]
        body = {"query_embeddings": [vector], "n_results": 10, "include": ["distances"]}
        started = time.perf_counter()
        async with http.post(urls[path], json=body) as response:
            await response.read()
            if response.status != 200:
                raise RuntimeError(f"{path} query: {response.status} {await response.text()}")
        samples[path].append(time.perf_counter() - started)
        await asyncio.sleep(options.think)


async def storms(
    service: Service, token: str, options: Options, numbers: Iterator[int]
) -> list[float]:
    """Launch storms back to back for ``options.seconds`` (at least one); launch times."""
    times: list[float] = []
    deadline = time.monotonic() + options.seconds
    while not times or time.monotonic() < deadline:
        times += await ours_round(service, token, options.boots, next(numbers))
    return times


async def phase(
    service: Service,
    tokens: tuple[str, str],
    steady: list[Steady],
    options: Options,
    numbers: Iterator[int] | None,
) -> tuple[dict[str, list[float]], list[float]]:
    """Query every steady instance for one phase: idle (``numbers`` None) or while
    storms run. The latencies per path, and the storms' launch times."""
    samples: dict[str, list[float]] = {path: [] for path in PATHS}
    stop = asyncio.Event()
    headers = {"Authorization": f"Bearer {tokens[0]}"}
    async with aiohttp.ClientSession(headers=headers) as http:
        loops = [
            asyncio.create_task(query_loop(http, _urls(service, one), options, stop, samples))
            for one in steady
        ]
        if numbers is None:
            await asyncio.sleep(options.seconds)
            launches: list[float] = []
        else:
            launches = await storms(service, tokens[1], options, numbers)
        stop.set()
        await asyncio.gather(*loops)
    return samples, launches


def _urls(service: Service, one: Steady) -> dict[str, str]:
    query = QUERY.format(one.collection_id)
    return {
        "direct": f"http://127.0.0.1:{one.port}{query}",
        "proxy": f"{service.url}/i/{one.instance_id}{query}",
    }


async def one_setting(
    admin_url: str, base: Path, niceness: int, options: Options
) -> dict[str, Any]:
    """Every round of both phases under a service whose servers run at ``niceness``."""
    env = {**default_reconciler_timing(), "CHROMA_ORCH_LOCAL__NICENESS": str(niceness)}
    data = base / f"data-{niceness}-{uuid.uuid4().hex[:6]}"
    service = Service(await fresh_database(admin_url), data, **env)
    await service.start()
    queries: dict[str, dict[str, list[float]]] = {p: {path: [] for path in PATHS} for p in PHASES}
    result: dict[str, Any] = {"launches": [], "queries": queries, "round_p99_ms": []}
    try:
        async with service.client() as admin:
            tokens = (
                (await create_tenant(admin, "steady"))[1],
                (await create_tenant(admin, "boot"))[1],
            )
        steady = await start_steady(service, tokens[0], options)
        result["steady_server_nice"] = sorted({psutil.Process(s.pid).nice() for s in steady})
        numbers = itertools.count()
        await ours_round(service, tokens[1], options.boots, next(numbers))  # warm-up
        for _ in range(options.rounds):
            round_p99 = {}
            for name, storm_numbers in (("floor", None), ("storm", numbers)):
                samples, launches = await phase(service, tokens, steady, options, storm_numbers)
                for path in PATHS:
                    queries[name][path] += samples[path]
                round_p99[name] = stats(samples["proxy"]).get("p99")
                result["launches"] += launches
            result["round_p99_ms"].append(round_p99)
    finally:
        await service.stop()
        kill_chroma_processes(data)
    return result


def report(niceness: int, merged: dict[str, Any], options: Options) -> dict[str, Any]:
    queries = merged["queries"]
    ms = {p: {path: stats(queries[p][path]) for path in PATHS} for p in PHASES}
    ratios = {
        path: {
            q: round(ms["storm"][path][q] / ms["floor"][path][q], 2) for q in ("p50", "p95", "p99")
        }
        for path in PATHS
    }
    return {
        "steady_server_nice": merged["steady_server_nice"],
        "query_ms": ms,
        "ratio_storm_to_floor": ratios,
        "launch_to_running_s": summary(merged["launches"], digits=3),
        "storms": len(merged["launches"]) // options.boots,
        "round_proxy_p99_ms": merged["round_p99_ms"],
    }


async def main(nicenesses: list[int], passes: int, options: Options) -> dict[str, Any]:
    merged: dict[int, dict[str, Any]] = {}
    loadavg = [os.getloadavg()]
    with workdir() as base, postgres(base) as admin_url:
        for number in range(passes):
            order = nicenesses if number % 2 == 0 else nicenesses[::-1]
            for niceness in order:
                result = await one_setting(admin_url, base, niceness, options)
                _merge(merged.setdefault(niceness, {}), result)
                loadavg.append(os.getloadavg())
    per_setting = {str(n): report(n, merged[n], options) for n in nicenesses}
    return {
        "benchmark": "tenant_latency",
        "cpus": os.cpu_count(),
        "options": vars(options) | {"passes": passes},
        "loadavg_1_5_15": [[round(x, 2) for x in avg] for avg in loadavg],
        "by_niceness": per_setting,
        "storm_proxy_p99_vs_niceness_0": _versus_zero(per_setting),
    }


def _merge(into: dict[str, Any], result: dict[str, Any]) -> None:
    if not into:
        into.update(result)
        return
    into["launches"] += result["launches"]
    into["round_p99_ms"] += result["round_p99_ms"]
    for name in PHASES:
        for path in PATHS:
            into["queries"][name][path] += result["queries"][name][path]


def _versus_zero(per_setting: dict[str, dict[str, Any]]) -> dict[str, float]:
    if "0" not in per_setting:
        return {}
    zero = per_setting["0"]["query_ms"]["storm"]["proxy"]["p99"]
    return {
        n: round(s["query_ms"]["storm"]["proxy"]["p99"] / zero, 2) for n, s in per_setting.items()
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--niceness", default="0,10", help="comma-separated settings to compare")
    parser.add_argument("--passes", type=int, default=1)
    parser.add_argument("--steady", type=int, default=3)
    parser.add_argument("--boots", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--think", type=float, default=0.02)
    parser.add_argument("--points", type=int, default=2000)
    parser.add_argument("--dim", type=int, default=128)
    args = parser.parse_args()
    opts = Options(
        args.steady, args.boots, args.rounds, args.seconds, args.think, args.points, args.dim
    )
    settings = [int(n) for n in args.niceness.split(",")]
    print(json.dumps(asyncio.run(main(settings, args.passes, opts)), indent=2))
