"""What tenants see while other servers boot: their query latency, per servers'
niceness (``CHROMA_ORCH_LOCAL__NICENESS``), in one run on one machine. Prints JSON.

    python bench/tenant_latency.py [--niceness 0,10] [--steady 3] [--boots 4]
        [--rounds 3] [--seconds 6] [--think 0.02] [--points 2000] [--dim 128] [--passes 1]
        [--storms api,bare]

For each niceness a real service runs with it (so its servers, the tenants' as well
as the booting ones, run that much below the service and its database). ``--steady``
tenants' instances each hold a collection of ``--points`` vectors; one client per
instance queries it (10 nearest, raw POST to the query endpoint) in a closed loop
with ``--think`` seconds between queries, alternately straight to the server
(``direct``: the server's share) and through the built-in proxy (``proxy``: what a
tenant sees end to end). Each round has these phases of ``--seconds`` each:

floor:      the machine otherwise idle (beside the storms: same service, same servers)
api_storm:  launch storms through the API, back to back: ``--boots`` instances
            created at once, waited for until running, deleted and waited for until
            gone (the control plane busy too: what a burst of starts costs tenants)
bare_storm: ``--boots`` servers spawned at once with the runtime's own argv at the
            same niceness, until their heartbeat answers, then stopped, back to back
            (servers booting without the control plane: the servers' share alone)

Reported per niceness: query latency percentiles (ms) per phase and path, each
storm's ratios to the floor, and launch-to-running seconds of the booting servers
per storm kind; ``storm_p99_vs_niceness_0`` compares the settings. ``--passes``
repeats everything in reversed niceness order, so drift (other load on the machine)
hits every setting alike; ``loadavg_1_5_15`` shows how busy the machine was before
the run and after each setting.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import random
import shutil
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
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
from bench.lifecycle import bare_starts, ours_round  # noqa: E402
from chroma_orch.runtimes.local.launch import read_lock, server_command  # noqa: E402
from chroma_orch.settings import LocalRuntimeSettings  # noqa: E402
from tests.e2e.service import Service, free_port, kill_chroma_processes  # noqa: E402
from tests.helpers import create_tenant  # noqa: E402

PATHS = ("direct", "proxy")
QUANTILES = ("p50", "p95", "p99")
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
    storms: list[str]


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


Storm = Callable[[], Awaitable[list[float]]]
"""One launch storm: starts ``--boots`` servers at once, waits for them and removes
them; their launch-to-running seconds."""


async def storms(one_storm: Storm, seconds: float) -> list[float]:
    """Storms back to back for ``seconds`` (at least one); launch times."""
    times: list[float] = []
    deadline = time.monotonic() + seconds
    while not times or time.monotonic() < deadline:
        times += await one_storm()
    return times


async def bare_storm(niceness: int, boots: int, base: Path) -> list[float]:
    """``boots`` servers spawned at once with the runtime's own argv at ``niceness``
    (no control plane involved), until their heartbeat answers; then stopped."""
    settings = LocalRuntimeSettings(niceness=niceness)
    ports = [free_port() for _ in range(boots)]
    paths = [base / f"bare-{uuid.uuid4().hex[:8]}" for _ in ports]
    argvs = [
        server_command(settings, path, path.with_suffix(".lock"), "127.0.0.1", port)
        for path, port in zip(paths, ports, strict=True)
    ]
    try:
        return await bare_starts(argvs, ports, base)
    finally:
        for path in paths:
            shutil.rmtree(path, ignore_errors=True)
            path.with_suffix(".lock").unlink(missing_ok=True)


async def phase(
    service: Service,
    token: str,
    steady: list[Steady],
    options: Options,
    one_storm: Storm | None,
) -> tuple[dict[str, list[float]], list[float]]:
    """Query every steady instance for one phase: idle (``one_storm`` None) or while
    storms run. The latencies per path, and the storms' launch times."""
    samples: dict[str, list[float]] = {path: [] for path in PATHS}
    stop = asyncio.Event()
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as http:
        loops = [
            asyncio.create_task(query_loop(http, _urls(service, one), options, stop, samples))
            for one in steady
        ]
        if one_storm is None:
            await asyncio.sleep(options.seconds)
            launches: list[float] = []
        else:
            launches = await storms(one_storm, options.seconds)
        stop.set()
        await asyncio.gather(*loops)
    return samples, launches


def _urls(service: Service, one: Steady) -> dict[str, str]:
    query = QUERY.format(one.collection_id)
    return {
        "direct": f"http://127.0.0.1:{one.port}{query}",
        "proxy": f"{service.url}/i/{one.instance_id}{query}",
    }


def _phases(
    service: Service, token: str, niceness: int, options: Options
) -> dict[str, Storm | None]:
    """The floor, then each storm kind asked for."""
    numbers = itertools.count()
    kinds: dict[str, Storm | None] = {"floor": None}
    if "api" in options.storms:
        kinds["api_storm"] = lambda: ours_round(service, token, options.boots, next(numbers))
    if "bare" in options.storms:
        base = service.data_dir.parent
        kinds["bare_storm"] = lambda: bare_storm(niceness, options.boots, base)
    return kinds


async def one_setting(
    admin_url: str, base: Path, niceness: int, options: Options
) -> dict[str, Any]:
    """Every round of every phase under a service whose servers run at ``niceness``."""
    env = {**default_reconciler_timing(), "CHROMA_ORCH_LOCAL__NICENESS": str(niceness)}
    data = base / f"data-{niceness}-{uuid.uuid4().hex[:6]}"
    service = Service(await fresh_database(admin_url), data, **env)
    await service.start()
    try:
        async with service.client() as admin:
            steady_token = (await create_tenant(admin, "steady"))[1]
            boot_token = (await create_tenant(admin, "boot"))[1]
        steady = await start_steady(service, steady_token, options)
        kinds = _phases(service, boot_token, niceness, options)
        result = _empty(kinds)
        result["steady_server_nice"] = sorted({psutil.Process(s.pid).nice() for s in steady})
        await ours_round(service, boot_token, options.boots, 10**6)  # warm-up
        for _ in range(options.rounds):
            round_p99 = {}
            for name, one_storm in kinds.items():
                samples, launches = await phase(service, steady_token, steady, options, one_storm)
                for path in PATHS:
                    result["queries"][name][path] += samples[path]
                round_p99[name] = stats(samples["proxy"]).get("p99")
                if one_storm is not None:
                    result["launches"][name] += launches
            result["round_p99_ms"].append(round_p99)
    finally:
        await service.stop()
        kill_chroma_processes(data)
    return result


def _empty(kinds: dict[str, Storm | None]) -> dict[str, Any]:
    return {
        "queries": {name: {path: [] for path in PATHS} for name in kinds},
        "launches": {name: [] for name in kinds if kinds[name] is not None},
        "round_p99_ms": [],
    }


def report(merged: dict[str, Any], options: Options) -> dict[str, Any]:
    queries = merged["queries"]
    ms = {name: {path: stats(queries[name][path]) for path in PATHS} for name in queries}
    ratios = {
        name: {
            path: {q: round(ms[name][path][q] / ms["floor"][path][q], 2) for q in QUANTILES}
            for path in PATHS
        }
        for name in merged["launches"]
    }
    return {
        "steady_server_nice": merged["steady_server_nice"],
        "query_ms": ms,
        "ratio_to_floor": ratios,
        "launch_to_running_s": {
            name: summary(times, digits=3) | {"storms": len(times) // options.boots}
            for name, times in merged["launches"].items()
        },
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
    per_setting = {str(n): report(merged[n], options) for n in nicenesses}
    return {
        "benchmark": "tenant_latency",
        "cpus": os.cpu_count(),
        "options": vars(options) | {"passes": passes},
        "loadavg_1_5_15": [[round(x, 2) for x in avg] for avg in loadavg],
        "by_niceness": per_setting,
        "storm_p99_vs_niceness_0": _versus_zero(per_setting),
    }


def _merge(into: dict[str, Any], result: dict[str, Any]) -> None:
    if not into:
        into.update(result)
        return
    into["round_p99_ms"] += result["round_p99_ms"]
    for name, times in result["launches"].items():
        into["launches"][name] += times
    for name, by_path in result["queries"].items():
        for path in PATHS:
            into["queries"][name][path] += by_path[path]


def _versus_zero(per_setting: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Each storm's p99 per path at each niceness, over niceness 0's."""
    if "0" not in per_setting:
        return {}
    zero = per_setting["0"]["query_ms"]
    return {
        f"{name}_{path}": {
            n: round(s["query_ms"][name][path]["p99"] / zero[name][path]["p99"], 2)
            for n, s in per_setting.items()
        }
        for name in per_setting["0"]["ratio_to_floor"]
        for path in PATHS
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
    parser.add_argument("--storms", default="api,bare", help="storm kinds: api, bare or both")
    args = parser.parse_args()
    opts = Options(
        args.steady,
        args.boots,
        args.rounds,
        args.seconds,
        args.think,
        args.points,
        args.dim,
        args.storms.split(","),
    )
    settings = [int(n) for n in args.niceness.split(",")]
    print(json.dumps(asyncio.run(main(settings, args.passes, opts)), indent=2))
